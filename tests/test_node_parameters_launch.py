"""The parameter table, the files generated from it, and the launch file.

- every parameter validates its default, rejects bad values with a reason, and has a full
  ParameterDescriptor (description, range, read_only);
- config/perception.yaml and the README table are what ``python -m xsam_ros.parameters``
  generates, so they agree with the table;
- launch/perception.launch.py, checked without launch_ros (not installable here) by parsing it:
  every DeclareLaunchArgument has a description, enums have the table's choices, the
  parameters it passes exist in the table with the right type, remappings target the node's
  relative topic names, and nothing is installed or evaluated.
"""

from __future__ import annotations

import ast
import math
import subprocess
import sys

import pytest
import yaml

from xsam_ros import parameters
from xsam_ros.parameters import BY_NAME, PARAMETERS, validate, validate_all

REQUIRED = {
    "model_path", "device", "backend", "image_reliability", "compressed_input", "use_depth", "depth_slop_s",
    "score_threshold", "mask_threshold", "max_instances", "publish_label_image", "default_vocabulary",
    "stuff_vocabulary", "tracking_min_iou", "no_image_warning_s", "max_image_pixels", "min_depth_m", "max_depth_m",
}
NODE_TOPICS = {"image", "depth", "camera_info", "command", "command_text", "clicked_point"}


def test_table_has_every_required_parameter_and_valid_defaults():
    names = [spec.name for spec in PARAMETERS]
    assert len(names) == len(set(names))
    assert REQUIRED <= set(names)
    assert validate_all(parameters.defaults()) == []
    for spec in PARAMETERS:
        assert spec.description.endswith(".") or spec.description.endswith(")"), spec.name
        assert len(spec.description) > 20, spec.name


def test_default_vocabulary_matches_the_demo_model_classes():
    from xsam_engine.tabletop.catalog import CLASSES, STUFF_CLASSES

    assert BY_NAME["default_vocabulary"].default == CLASSES
    assert BY_NAME["stuff_vocabulary"].default == STUFF_CLASSES


@pytest.mark.parametrize("name, value, reason", [
    ("score_threshold", 1.5, "score_threshold must be in [-1.0, 1.0], got 1.5"),
    ("score_threshold", -1.5, "must be in"),
    ("overlap_threshold", 1.01, "overlap_threshold must be in [-1.0, 1.0]"),
    ("score_threshold", "high", "must be a number"),
    ("score_threshold", math.nan, "must be finite"),
    ("mask_threshold", 0.0, "mask_threshold must be in (0, 1), got 0.0. (negative = the model's default)"),
    ("mask_threshold", 1.0, "must be in"),
    ("max_instances", 0, "max_instances must be in [1, 1000], got 0"),
    ("max_instances", 2.5, "must be an integer"),
    ("max_instances", True, "must be an integer"),
    ("device", "gpu", "device must be one of auto, cpu, cuda; got 'gpu'"),
    ("backend", "openvino", "must be one of auto, torch, onnxruntime, tensorrt, triton"),
    # triton_url: the engine's "host:port" rule (xsam_engine/triton/address.py), checked at start-up
    ("triton_url", "grpc://gpu-server:8001", "triton_url must be 'host:port' without a scheme or spaces (e.g. "
     "'gpu-server:8001' for gRPC, 'gpu-server:8000' for HTTP), got 'grpc://gpu-server:8001'; choose the protocol "
     "with triton_protocol"),
    ("triton_url", "gpu-server", "triton_url must end in ':port' with a port in 1..65535"),
    ("triton_url", "gpu-server:70000", "with a port in 1..65535"),
    ("triton_url", "gpu-server:80a", "with a port in 1..65535"),
    ("triton_url", "", "triton_url must be 'host:port'"),
    ("triton_url", " gpu-server:8001", "without a scheme or spaces"),
    ("triton_protocol", "https", "triton_protocol must be one of grpc, http; got 'https'"),
    ("triton_timeout_s", 0.0, "triton_timeout_s must be in (0.0, 600.0], got 0.0"),
    ("triton_timeout_s", -1.0, "must be in (0.0, 600.0]"),
    ("triton_fallback", "yes", "must be a bool"),
    ("image_reliability", "sometimes", "must be one of auto, reliable, best_effort"),
    ("compressed_input", "yes", "must be a bool"),
    ("default_vocabulary", ["cup", ""], "default_vocabulary contains an empty name"),
    ("default_vocabulary", ["cup", "Cup"], "default_vocabulary names the same class more than once"),
    ("stuff_vocabulary", ["x" * 201], "the limit is 200"),
    ("default_vocabulary", "cup", "must be a list of strings"),
    ("max_depth_m", 0.0, "max_depth_m must be in (0.0, 1000.0]"),
    ("no_image_warning_s", 0.1, "must be in [0.5, 3600.0]"),
    ("nonexistent", 1, "unknown parameter"),
])
def test_bad_values_are_rejected_with_a_reason(name, value, reason):
    assert reason in validate(name, value)


@pytest.mark.parametrize("url", ["127.0.0.1:8001", "gpu-server:8000", "gpu-server.lab.example:443", "[::1]:8001"])
def test_triton_url_accepts_host_and_port(url):
    assert validate("triton_url", url) is None


def test_depth_range_must_be_ordered():
    values = parameters.defaults()
    values.update(min_depth_m=2.0, max_depth_m=1.0)
    assert validate_all(values) == ["min_depth_m (2.0) must be smaller than max_depth_m (1.0)"]


def test_descriptors_carry_description_range_and_read_only():
    from rcl_interfaces.msg import ParameterType

    score = parameters.descriptor(BY_NAME["score_threshold"])
    assert score.type == ParameterType.PARAMETER_DOUBLE and "negative = the model's default" in score.description
    assert (score.floating_point_range[0].from_value, score.floating_point_range[0].to_value) == (-1.0, 1.0)
    assert not score.read_only
    instances = parameters.descriptor(BY_NAME["max_instances"])
    assert (instances.integer_range[0].from_value, instances.integer_range[0].to_value) == (1, 1000)
    device = parameters.descriptor(BY_NAME["device"])
    assert device.read_only and device.additional_constraints == "one of: auto, cpu, cuda"
    assert parameters.descriptor(BY_NAME["default_vocabulary"]).type == ParameterType.PARAMETER_STRING_ARRAY
    read_only = {spec.name for spec in PARAMETERS if spec.read_only}
    assert {"model_path", "device", "backend", "image_reliability", "compressed_input", "use_depth"} <= read_only
    # The predictor built at activation holds its server connection: a change could only apply at the next
    # activation, so ros2 param set refuses it instead of accepting a value that does nothing.
    assert {"triton_url", "triton_protocol", "triton_timeout_s", "triton_fallback"} <= read_only
    assert not read_only & {"score_threshold", "mask_threshold", "max_instances", "tracking_min_iou"}


def test_config_yaml_is_the_generated_file(repo_root):
    assert (repo_root / "config" / "perception.yaml").read_text() == parameters.to_yaml(), (
        "config/perception.yaml is out of date: run `python -m xsam_ros.parameters --yaml > config/perception.yaml`")
    loaded = yaml.safe_load((repo_root / "config" / "perception.yaml").read_text())
    assert loaded == {"/**": {"ros__parameters": parameters.defaults()}}


def test_readme_parameter_table_is_the_generated_table(repo_root):
    readme = (repo_root / "README.md").read_text()
    section = readme.split("\n## Parameters\n", 1)[1].split("\n## ", 1)[0]
    assert parameters.to_markdown() in section, (
        "README 'Parameters' table is out of date: paste `python -m xsam_ros.parameters --markdown`")


def test_generator_cli(repo_root):
    for flag, expected in (("--yaml", parameters.to_yaml()), ("--markdown", parameters.to_markdown())):
        out = subprocess.run([sys.executable, "-m", "xsam_ros.parameters", flag], cwd=repo_root,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout == expected


def test_declare_all_on_a_real_node(rclpy_context):
    import rclpy
    from rclpy.parameter import Parameter

    node = rclpy.create_node(
        "declare_test", context=rclpy_context,
        parameter_overrides=[Parameter("score_threshold", value=0.25), Parameter("default_vocabulary", value=["a", "b"])])
    try:
        values = parameters.declare_all(node)
        assert values["score_threshold"] == 0.25 and values["default_vocabulary"] == ["a", "b"]
        assert values["device"] == "auto" and values["use_depth"] is True
        described = node.describe_parameter("max_instances")
        assert described.integer_range[0].to_value == 1000 and described.description
        assert not node.set_parameters([Parameter("device", value="cpu")])[0].successful  # read-only
    finally:
        node.destroy_node()
    bad = rclpy.create_node("declare_bad", context=rclpy_context,
                            parameter_overrides=[Parameter("device", value="gpu")])
    try:
        with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda"):
            parameters.declare_all(bad)
    finally:
        bad.destroy_node()


# -- launch file ----------------------------------------------------------------------------------


def _launch_tree(repo_root):
    source = (repo_root / "launch" / "perception.launch.py").read_text()
    return source, ast.parse(source)


def _calls(tree, name):
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) == name]


def _keyword(call, name):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _launch_config_name(node):
    """'x' for LaunchConfiguration("x"), else None."""
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "LaunchConfiguration":
        return node.args[0].value
    return None


def _keyword_name(call, name):
    """'x' for keyword=x (a Name) or keyword=a.x (an Attribute), else None."""
    value = _keyword(call, name)
    return getattr(value, "id", getattr(value, "attr", None))


def _static_arguments(tree):
    """{name: (default, description, choices)} of the DeclareLaunchArgument calls with a literal name."""
    booleans = None
    for assign in ast.walk(tree):
        if isinstance(assign, ast.Assign) and getattr(assign.targets[0], "id", None) == "BOOLEAN":
            booleans = [element.value for element in assign.value.elts]
    arguments = {}
    for call in _calls(tree, "DeclareLaunchArgument"):
        if not isinstance(call.args[0], ast.Constant):
            continue
        choices = _keyword(call, "choices")
        if choices is not None:
            choices = booleans if isinstance(choices, ast.Name) and choices.id == "BOOLEAN" else ast.literal_eval(choices)
        default = _keyword(call, "default_value")
        arguments[call.args[0].value] = (default.value if isinstance(default, ast.Constant) else default,
                                         ast.literal_eval(_keyword(call, "description")), choices)
    return arguments


def test_launch_arguments_have_descriptions_and_choices(repo_root):
    _, tree = _launch_tree(repo_root)
    static = _static_arguments(tree)
    assert {"namespace", "image_topic", "depth_topic", "camera_info_topic", "params_file", "autostart", "use_sim_time",
            "log_level", "use_fastdds_profile", "fastdds_profile"} <= set(static)
    for name, (default, description, choices) in static.items():
        assert isinstance(description, str) and len(description) > 20, name
        assert default is not None, name
        if choices is not None:
            assert default in choices, name
    assert static["autostart"][:1] == ("true",) and static["autostart"][2] == ["true", "false"]
    # The arguments that set parameters are generated from the table: none is written out by hand.
    assert not set(static) & set(BY_NAME), set(static) & set(BY_NAME)


def test_launch_arguments_are_generated_from_the_parameter_table(repo_root):
    """Launch file, table, README and node agree: the launch file declares one argument per
    ``launch_arguments()`` entry with its name, default, description and choices, and passes it to the
    node as a parameter of the table's type."""
    source, tree = _launch_tree(repo_root)
    assert "from xsam_ros.parameters import launch_arguments" in source
    (generated_call,) = [call for call in _calls(tree, "DeclareLaunchArgument") if not isinstance(call.args[0], ast.Constant)]
    assert ast.unparse(generated_call.args[0]) == "argument.name"
    assert ast.unparse(_keyword(generated_call, "default_value")) == "argument.default"
    assert ast.unparse(_keyword(generated_call, "description")) == "argument.description"
    assert ast.unparse(_keyword(generated_call, "choices")) == "list(argument.choices) if argument.choices else None"
    (comprehension,) = [node for node in ast.walk(tree) if isinstance(node, ast.ListComp)
                        and isinstance(node.elt, ast.Call) and getattr(node.elt.func, "id", None) == "DeclareLaunchArgument"]
    assert ast.unparse(comprehension.generators[0].iter) == "generated"
    (overrides,) = [node for node in ast.walk(tree) if isinstance(node, ast.DictComp)]
    assert ast.unparse(overrides.key) == "argument.name"
    assert ast.unparse(overrides.value) == (
        "ParameterValue(LaunchConfiguration(argument.name), value_type=argument.value_type)")
    # What launch_arguments() yields: every parameter marked launch_argument, with the table's values.
    generated = parameters.launch_arguments()
    assert [a.name for a in generated] == [s.name for s in PARAMETERS if s.launch_argument]
    assert {"model_path", "device", "backend", "image_reliability", "compressed_input", "use_depth"} <= {
        a.name for a in generated}
    for argument in generated:
        spec = BY_NAME[argument.name]
        assert argument.description == spec.description and argument.value_type is parameters.LAUNCH_TYPES[spec.kind]
        if spec.kind == "bool":
            assert argument.choices == ("true", "false") and argument.default == ("true" if spec.default else "false")
        else:
            assert argument.choices == (spec.choices or None) and argument.default == str(spec.default)
        if argument.choices:
            assert argument.default in argument.choices  # DeclareLaunchArgument refuses anything else
    # The README lists every launch argument (the generated ones as the generated table).
    readme = (repo_root / "README.md").read_text()
    assert parameters.to_launch_markdown() in readme, (
        "README launch-argument table is out of date: paste `python -m xsam_ros.parameters --launch-markdown`")
    for name in _static_arguments(tree):
        assert f"`{name}`" in readme, f"README does not mention the launch argument {name}"


def test_launch_node_is_a_lifecycle_node_with_autostart_events(repo_root):
    source, tree = _launch_tree(repo_root)
    declared = {call.args[0].value for call in _calls(tree, "DeclareLaunchArgument") if isinstance(call.args[0], ast.Constant)}
    declared |= {argument.name for argument in parameters.launch_arguments()}
    (node,) = _calls(tree, "LifecycleNode")
    assert not _calls(tree, "Node")
    assert ast.literal_eval(_keyword(node, "package")) == "xsam_ros"
    assert ast.literal_eval(_keyword(node, "executable")) == "perception_node"
    assert ast.literal_eval(_keyword(node, "name")) == "perception_node"
    assert _launch_config_name(_keyword(node, "namespace")) == "namespace"
    assert _keyword(node, "autostart") is None  # Humble's launch_ros has no such argument: events below instead
    params = _keyword(node, "parameters").elts
    assert _launch_config_name(params[0]) == "params_file"  # the YAML file first, arguments override it
    assert ast.unparse(params[1]) == "overrides"
    remappings = [(pair.elts[0].value, _launch_config_name(pair.elts[1])) for pair in _keyword(node, "remappings").elts]
    for source_name, target in remappings:
        assert source_name in NODE_TOPICS and not source_name.startswith("/"), source_name
        assert target in declared
    assert {name for name, _ in remappings} == {"image", "depth", "camera_info"}
    # autostart: configure at once, activate on configuring -> inactive; both only with autostart:=true.
    (handler,) = _calls(tree, "OnStateTransition")
    assert _keyword_name(handler, "target_lifecycle_node") == "node"
    assert (ast.literal_eval(_keyword(handler, "start_state")), ast.literal_eval(_keyword(handler, "goal_state"))) == (
        "configuring", "inactive")
    transitions = [ast.unparse(_keyword(call, "transition_id")) for call in _calls(tree, "ChangeState")]
    assert sorted(transitions) == ["lifecycle_msgs.msg.Transition.TRANSITION_ACTIVATE",
                                   "lifecycle_msgs.msg.Transition.TRANSITION_CONFIGURE"]
    assert "TRANSITION_ACTIVATE" in ast.unparse(handler) and "TRANSITION_CONFIGURE" not in ast.unparse(handler)
    assert all(ast.unparse(_keyword(call, "lifecycle_node_matcher")) == "matches_action(node)"
               for call in _calls(tree, "ChangeState"))
    conditional = [call for call in _calls(tree, "RegisterEventHandler") + _calls(tree, "EmitEvent")
                   if _keyword(call, "condition") is not None]
    assert len(conditional) == 2 and all(ast.unparse(_keyword(call, "condition")) == "autostart" for call in conditional)
    (returned,) = [node for node in ast.walk(tree) if isinstance(node, ast.Return)]
    assert ast.unparse(returned.value) == (
        "LaunchDescription(arguments + set_profile + [node, activate_when_configured, configure])")
    # Nothing is installed or evaluated at launch time.
    for forbidden in ("subprocess", "eval(", "exec(", "PythonExpression", "pip", "os.system"):
        assert forbidden not in source, forbidden
    used = {call.args[0].value for call in _calls(tree, "LaunchConfiguration") if isinstance(call.args[0], ast.Constant)}
    assert used <= declared, used - declared


def test_the_node_declares_the_table(rclpy_context):
    """The fourth copy: what the perception node itself declares (name, default, read-only), unconfigured."""
    from xsam_ros.perception_node import PerceptionNode

    node = PerceptionNode(context=rclpy_context)
    try:
        for spec in PARAMETERS:
            expected = list(spec.default) if spec.kind == "string[]" else spec.default
            value = node.get_parameter(spec.name).value
            assert (list(value) if spec.kind == "string[]" else value) == expected, spec.name
            assert node.describe_parameter(spec.name).read_only == spec.read_only, spec.name
    finally:
        node.release()
        node.destroy_node()
