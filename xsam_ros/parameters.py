"""The perception node's ROS parameters: one table, and everything generated from it.

``PARAMETERS`` is the single source of every parameter's name, type, default, range or
choices, description and whether it may change at runtime. From it come:

- the ``ParameterDescriptor``s the node declares (description, ``FloatingPointRange`` /
  ``IntegerRange``, ``read_only``, the choices in ``additional_constraints``);
- value validation with a reason (``validate``), used at start-up and by the node's
  on-set-parameters callback;
- ``config/perception.yaml`` (``python -m xsam_ros.parameters --yaml``) and the README tables
  (``--markdown``: every parameter; ``--launch-markdown``: the launch arguments);
- the launch arguments of ``launch/perception.launch.py`` (``launch_arguments``: name, default,
  description, choices of every parameter marked ``launch_argument``), which the launch file
  declares and passes to the node.

A test checks that the YAML file, the README tables, the launch file and the node's declared
parameters all agree with this table.

This module imports no ROS package at module level, so ``--yaml`` / ``--markdown`` and the
validation run anywhere.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from xsam_engine.requests import THRESHOLD_RANGES, check_threshold, normalise_names
from xsam_engine.triton.address import url_problem

# Classes of the built-in tabletop demo model (xsam_engine.tabletop.catalog); a test keeps
# them in sync without importing the engine here.
TABLETOP_CLASSES = ("cup", "mug", "bowl", "bottle", "box", "ball", "can", "plate")
TABLETOP_STUFF = ("table",)

BOOL, INT, FLOAT, STRING, STRING_ARRAY = "bool", "int", "float", "string", "string[]"


@dataclass(frozen=True)
class ParameterSpec:
    """One ROS parameter of the node.

    Attributes:
        name: parameter name (snake_case).
        kind: one of "bool", "int", "float", "string", "string[]".
        default: default value (a tuple for "string[]").
        description: one or two sentences: what it does, unit.
        minimum / maximum: inclusive numeric range (None = unbounded).
        choices: allowed values of a string parameter (empty = any string).
        read_only: True where a change at runtime makes no sense (model, device, topics' QoS);
            set those at start-up (YAML file, launch argument, --ros-args -p).
        exclusive_minimum: the value must be strictly greater than ``minimum``.
        launch_argument: also a launch argument of launch/perception.launch.py (set per robot).
    """

    name: str
    kind: str
    default: Any
    description: str
    minimum: float | int | None = None
    maximum: float | int | None = None
    choices: tuple[str, ...] = ()
    read_only: bool = False
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    launch_argument: bool = False

    @property
    def range_text(self) -> str:
        if self.choices:
            return " \\| ".join(self.choices)
        if self.minimum is None and self.maximum is None:
            return ""
        low = "(" if self.exclusive_minimum else "["
        high = ")" if self.exclusive_maximum else "]"
        return f"{low}{_format(self.minimum)}, {_format(self.maximum)}{high}"


PARAMETERS: tuple[ParameterSpec, ...] = (
    # -- model ---------------------------------------------------------------------------------
    ParameterSpec(
        "model_path", STRING, "",
        "Directory of an X-SAM model written by xsam_engine.checkpoint.save_pretrained "
        "(model.safetensors, config.json, tokenizer files). Empty = the built-in tabletop demo model.",
        read_only=True, launch_argument=True),
    ParameterSpec(
        "device", STRING, "auto",
        "Where the model runs: auto = cuda when available, else cpu. cuda without a GPU falls back "
        "to cpu with one warning.",
        choices=("auto", "cpu", "cuda"), read_only=True, launch_argument=True),
    ParameterSpec(
        "cpu_threads", INT, 0,
        "PyTorch threads for CPU inference; 0 = half the CPU cores (at least 1). More threads than "
        "free cores slows inference down many times over when other processes are busy.",
        minimum=0, maximum=256, read_only=True),
    ParameterSpec(
        "backend", STRING, "auto",
        "Runtime of the image stages: auto = tensorrt with CUDA when installed, else onnxruntime with "
        "its CUDA provider, else torch. A backend that cannot run here falls back "
        "(tensorrt -> onnxruntime -> torch) with one log line; the language model always runs in torch "
        "(on device). triton = on the Triton Inference Server at triton_url (docs/fleet.md), never "
        "silently elsewhere: see triton_fallback.",
        choices=("auto", "torch", "onnxruntime", "tensorrt", "triton"), read_only=True, launch_argument=True),
    ParameterSpec(
        "engine_cache_dir", STRING, "",
        "Directory for ONNX exports and TensorRT engines (onnxruntime / tensorrt backends). "
        "Empty = ~/.cache/xsam_ros/engines.",
        read_only=True),
    ParameterSpec(
        "engine_file_path", STRING, "",
        "TensorRT only: an explicit engine file to use or build; empty = a file in engine_cache_dir "
        "named after the model, TensorRT version and GPU.",
        read_only=True),
    ParameterSpec(
        "force_engine_update", BOOL, False,
        "TensorRT only: rebuild the engines at start-up even when a cached one matches.",
        read_only=True),
    ParameterSpec(
        "enable_fp16", BOOL, True,
        "TensorRT only: allow FP16 kernels in the engines.",
        read_only=True),
    ParameterSpec(
        "enable_int8", BOOL, False,
        "TensorRT only: INT8 engines calibrated on generated tabletop scenes.",
        read_only=True),
    ParameterSpec(
        "max_workspace_size", INT, 0,
        "TensorRT only: builder workspace limit in bytes; 0 = the engine builder's default.",
        minimum=0, maximum=2**40, read_only=True),
    ParameterSpec(
        "triton_url", STRING, "127.0.0.1:8001",
        "Triton only: the server as host:port, no scheme (tritonserver's ports: 8001 gRPC, 8000 "
        "HTTP). Its models must serve this model's weights (python -m xsam_engine.export "
        "--triton-repository); activation fails with the reason otherwise.",
        read_only=True, launch_argument=True),
    ParameterSpec(
        "triton_protocol", STRING, "grpc",
        "Triton only: how to reach the server; http needs triton_url on the HTTP port (8000 by default).",
        choices=("grpc", "http"), read_only=True),
    ParameterSpec(
        "triton_timeout_s", FLOAT, 5.0,
        "Triton only: limit of every request to the server and of the health check (s); a server "
        "that does not answer in time counts as unreachable.",
        minimum=0.0, maximum=600.0, exclusive_minimum=True, read_only=True),
    ParameterSpec(
        "triton_fallback", BOOL, False,
        "Triton only: while the server is unreachable (at activation too), run the image stages on "
        "the local backend auto picks (diagnostics WARN) and return to the server when it is back. "
        "false = commands fail with an error naming the server (diagnostics ERROR), and an unreachable "
        "server fails the activation.",
        read_only=True),
    # -- inputs --------------------------------------------------------------------------------
    ParameterSpec(
        "image_reliability", STRING, "auto",
        "Reliability of the image, depth and camera_info subscriptions: auto = best_effort if any "
        "publisher on the topic is best-effort, else reliable (re-checked while running).",
        choices=("auto", "reliable", "best_effort"), read_only=True, launch_argument=True),
    ParameterSpec(
        "compressed_input", BOOL, False,
        "Subscribe to <image>/compressed (sensor_msgs/CompressedImage, JPEG/PNG) instead of the raw image.",
        read_only=True, launch_argument=True),
    ParameterSpec(
        "use_depth", BOOL, True,
        "Subscribe to depth (16UC1 mm or 32FC1 m, registered to the colour image) and camera_info "
        "and publish 3D centroids and extents.",
        read_only=True, launch_argument=True),
    ParameterSpec(
        "depth_slop_s", FLOAT, 0.02,
        "Largest stamp difference between an image and the depth image paired with it (s); "
        "0 = exact stamps only.",
        minimum=0.0, maximum=1.0),
    ParameterSpec(
        "depth_wait_s", FLOAT, 0.1,
        "While a depth stream is active (a depth image arrived in the last 2 s), how long the worker "
        "waits after inference for the depth image of the frame if it has not arrived yet (s); "
        "0 = never wait. Callbacks never wait.",
        minimum=0.0, maximum=1.0),
    ParameterSpec(
        "min_depth_m", FLOAT, 0.05,
        "Depth values below this are treated as invalid (m).",
        minimum=0.0, maximum=100.0),
    ParameterSpec(
        "max_depth_m", FLOAT, 10.0,
        "Depth values above this are treated as invalid (m); must exceed min_depth_m.",
        minimum=0.0, maximum=1000.0, exclusive_minimum=True),
    ParameterSpec(
        "max_image_pixels", INT, 3840 * 2160,
        "Images with more pixels (width x height) are rejected with an error.",
        minimum=1, maximum=100_000_000),
    # -- commands ------------------------------------------------------------------------------
    ParameterSpec(
        "default_vocabulary", STRING_ARRAY, TABLETOP_CLASSES,
        "Class names used by 'segment everything' commands and by generic tasks sent without a vocabulary.",
    ),
    ParameterSpec(
        "stuff_vocabulary", STRING_ARRAY, TABLETOP_STUFF,
        "Amorphous classes ('table') added to panoptic requests without a stuff vocabulary.",
    ),
    ParameterSpec(
        "command_timeout_s", FLOAT, 10.0,
        "A command waits this long for the next image; after that it is answered with success=false (s).",
        minimum=0.1, maximum=3600.0),
    ParameterSpec(
        "max_pending_commands", INT, 8,
        "Commands waiting for the next image; when full, the oldest is dropped and answered with an error.",
        minimum=1, maximum=100, read_only=True),
    # -- inference -----------------------------------------------------------------------------
    ParameterSpec(
        "score_threshold", FLOAT, -1.0,
        "Score threshold of every task, in [0, 1] (what it gates per task: README 'Thresholds'); "
        "negative = the model's default for the task. A command's own score_threshold overrides it.",
        minimum=-1.0, maximum=1.0),
    ParameterSpec(
        "mask_threshold", FLOAT, -1.0,
        "Mask probability above which a pixel belongs to an instance, in (0, 1); negative = the model's "
        "default (0.5 for X-SAM). A command's own mask_threshold overrides it.",
        minimum=-1.0, maximum=1.0, exclusive_maximum=True),
    ParameterSpec(
        "overlap_threshold", FLOAT, -1.0,
        "Panoptic only, in [0, 1]: a query becomes a segment when the pixels it wins cover more than this "
        "fraction of its own mask; negative = the model's default (0.8 for X-SAM). A command's own "
        "overlap_threshold overrides it.",
        minimum=-1.0, maximum=1.0),
    ParameterSpec(
        "max_instances", INT, 20,
        "At most this many instances (highest scores) per result.",
        minimum=1, maximum=1000),
    ParameterSpec(
        "tracking_min_iou", FLOAT, 0.3,
        "Continuous commands: an instance keeps its id when its mask overlaps the previous frame's "
        "mask of the same class by at least this IoU (applies to the next continuous command).",
        minimum=0.0, maximum=1.0),
    ParameterSpec(
        "tracking_max_missed", INT, 15,
        "Continuous commands: an id is forgotten after this many frames without a match.",
        minimum=0, maximum=10_000),
    # -- outputs -------------------------------------------------------------------------------
    ParameterSpec(
        "publish_label_image", BOOL, False,
        "Fill InstanceMaskArray.label_image (16UC1, image size) with the semantic, panoptic or "
        "instance label image.",
    ),
    ParameterSpec(
        "no_image_warning_s", FLOAT, 5.0,
        "Warn (with the topic, its publishers and their QoS) when no image arrived for this long (s).",
        minimum=0.5, maximum=3600.0),
    ParameterSpec(
        "qos_check_period_s", FLOAT, 1.0,
        "How often the publishers of the input topics are checked to match their reliability (s).",
        minimum=0.1, maximum=60.0, read_only=True),
    ParameterSpec(
        "diagnostics_period_s", FLOAT, 1.0,
        "Period of the /diagnostics status (s).",
        minimum=0.1, maximum=60.0, read_only=True),
)

BY_NAME: dict[str, ParameterSpec] = {spec.name: spec for spec in PARAMETERS}


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if value is None:
        return ""
    return str(value)


# -- validation ------------------------------------------------------------------------------


def validate(name: str, value: Any) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name``, or None when it is."""
    spec = BY_NAME.get(name)
    if spec is None:
        return f"unknown parameter {name!r}"
    kind = spec.kind
    if kind == BOOL:
        if not isinstance(value, bool):
            return f"{name} must be a bool, got {value!r}"
        return None
    if kind == STRING:
        if not isinstance(value, str):
            return f"{name} must be a string, got {value!r}"
        if spec.choices and value not in spec.choices:
            return f"{name} must be one of {', '.join(spec.choices)}; got {value!r}"
        return _extra_check(spec, value)
    if kind == STRING_ARRAY:
        if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
            return f"{name} must be a list of strings, got {value!r}"
        return _extra_check(spec, value)
    if kind == INT:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{name} must be an integer, got {value!r}"
    elif kind == FLOAT:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{name} must be a number, got {value!r}"
        if not math.isfinite(value):
            return f"{name} must be finite, got {value!r}"
    if spec.minimum is not None:
        if value < spec.minimum or (spec.exclusive_minimum and value == spec.minimum):
            return f"{name} must be in {spec.range_text}, got {value!r}"
    if spec.maximum is not None:
        if value > spec.maximum or (spec.exclusive_maximum and value == spec.maximum):
            return f"{name} must be in {spec.range_text}, got {value!r}"
    return _extra_check(spec, value)


def _extra_check(spec: ParameterSpec, value: Any) -> str | None:
    """The rule a range cannot express: class names follow the engine's request rule; a threshold
    that is set (>= 0) must be inside the engine's range for it; triton_url is "host:port" (the engine's rule)."""
    if spec.name == "triton_url":
        return url_problem(value) or None
    try:
        if spec.kind == STRING_ARRAY:
            normalise_names(value, spec.name)
        elif spec.name in THRESHOLD_RANGES and value >= 0:
            check_threshold(spec.name, value)
    except ValueError as error:
        return f"{error} (negative = the model's default)" if spec.kind == FLOAT else str(error)
    return None


def validate_all(values: Mapping[str, Any]) -> list[str]:
    """Errors of every value plus the checks that involve several parameters."""
    errors = [error for name, value in values.items() if (error := validate(name, value))]
    low, high = values.get("min_depth_m"), values.get("max_depth_m")
    if not errors and low is not None and high is not None and not low < high:
        errors.append(f"min_depth_m ({low}) must be smaller than max_depth_m ({high})")
    return errors


def apply_changes(values: Mapping[str, Any], changes) -> tuple[dict[str, Any], list[str]]:
    """(the values with ``changes`` applied, the errors that refuse them all) for an on-set-parameters callback.

    ``changes``: rclpy Parameters (``name``, ``value``); names outside the table are left to rclpy.
    """
    proposed = dict(values)
    for change in changes:
        if change.name in BY_NAME:
            value = change.value
            array = isinstance(value, (list, tuple)) or type(value).__name__ == "array"
            proposed[change.name] = list(value) if array else value
    return proposed, validate_all(proposed)


def defaults() -> dict[str, Any]:
    return {spec.name: (list(spec.default) if spec.kind == STRING_ARRAY else spec.default) for spec in PARAMETERS}


# -- ROS descriptors ---------------------------------------------------------------------------


def descriptor(spec: ParameterSpec):
    """The rcl_interfaces ParameterDescriptor of one parameter."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

    types = {
        BOOL: ParameterType.PARAMETER_BOOL,
        INT: ParameterType.PARAMETER_INTEGER,
        FLOAT: ParameterType.PARAMETER_DOUBLE,
        STRING: ParameterType.PARAMETER_STRING,
        STRING_ARRAY: ParameterType.PARAMETER_STRING_ARRAY,
    }
    result = ParameterDescriptor(
        name=spec.name, type=types[spec.kind], description=spec.description, read_only=spec.read_only)
    if spec.choices:
        result.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.kind == FLOAT and (spec.minimum is not None or spec.maximum is not None):
        result.floating_point_range = [FloatingPointRange(
            from_value=float(spec.minimum if spec.minimum is not None else -sys.float_info.max),
            to_value=float(spec.maximum if spec.maximum is not None else sys.float_info.max),
            step=0.0)]
        if spec.exclusive_minimum or spec.exclusive_maximum:
            result.additional_constraints = f"range {spec.range_text}"
    elif spec.kind == INT and (spec.minimum is not None or spec.maximum is not None):
        result.integer_range = [IntegerRange(
            from_value=int(spec.minimum if spec.minimum is not None else -(2**63)),
            to_value=int(spec.maximum if spec.maximum is not None else 2**63 - 1),
            step=1)]
    return result


def declare_all(node) -> dict[str, Any]:
    """Declare every parameter on ``node`` (overrides from YAML / launch apply) and return the values.

    Raises ValueError listing every invalid value, so a bad configuration fails at start-up
    with the parameter's name in the message.
    """
    values = {}
    for spec in PARAMETERS:
        default = list(spec.default) if spec.kind == STRING_ARRAY else spec.default
        try:
            parameter = node.declare_parameter(spec.name, default, descriptor(spec))
        except Exception as error:  # rclpy raises several types for a wrongly typed override
            raise ValueError(
                f"parameter {spec.name}: {error} (expected {spec.kind}, default {_format(spec.default)})"
            ) from error
        value = parameter.value
        if spec.kind == STRING_ARRAY and value is not None:
            value = list(value)
        values[spec.name] = value
    errors = validate_all(values)
    if errors:
        raise ValueError("invalid parameters: " + "; ".join(errors))
    return values


# -- generated documents -----------------------------------------------------------------------


def _yaml_value(spec: ParameterSpec, value: Any) -> str:
    if spec.kind == BOOL:
        return "true" if value else "false"
    if spec.kind == STRING:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if spec.kind == FLOAT:
        return repr(float(value))
    if spec.kind == STRING_ARRAY:
        return "[" + ", ".join('"' + item + '"' for item in value) + "]"
    return str(value)


def _wrap(text: str, width: int, prefix: str) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=width, initial_indent=prefix, subsequent_indent=prefix)


def to_yaml() -> str:
    """config/perception.yaml: every parameter with its default, description and range."""
    lines = [
        "# Parameters of xsam_ros perception_node (generated by `python -m xsam_ros.parameters --yaml`;",
        "# the table in xsam_ros/parameters.py is the source, a test checks this file against it).",
        "# `/**` applies them to the node whatever its name and namespace.",
        "/**:",
        "  ros__parameters:",
    ]
    for spec in PARAMETERS:
        if spec.choices:
            notes = ["one of: " + ", ".join(spec.choices)]
        elif spec.range_text:
            notes = ["range: " + spec.range_text]
        else:
            notes = []
        if spec.read_only:
            notes.append("read-only at runtime")
        note = "; ".join(n for n in notes if n)
        text = spec.description + (f" ({note})" if note else "")
        lines.extend(_wrap(text, 96, "    # "))
        lines.append(f"    {spec.name}: {_yaml_value(spec, spec.default)}")
    return "\n".join(lines) + "\n"


def _markdown_default(spec: ParameterSpec) -> str:
    if spec.kind == STRING_ARRAY:
        return "`[" + ", ".join(spec.default) + "]`"
    if spec.kind == STRING:
        return f'`"{spec.default}"`'
    return f"`{_format(spec.default)}`"


def to_markdown() -> str:
    """The README parameter table."""
    lines = [
        "| Parameter | Type | Default | Range / choices | Runtime | Description |",
        "|---|---|---|---|---|---|",
    ]
    for spec in PARAMETERS:
        lines.append(
            f"| `{spec.name}` | {spec.kind} | {_markdown_default(spec)} | {spec.range_text} | "
            f"{'read-only' if spec.read_only else 'yes'} | {spec.description} |"
        )
    return "\n".join(lines) + "\n"


# -- launch arguments --------------------------------------------------------------------------

LAUNCH_TYPES = {BOOL: bool, INT: int, FLOAT: float, STRING: str}


@dataclass(frozen=True)
class LaunchArgument:
    """A launch argument generated from a parameter (DeclareLaunchArgument + ParameterValue).

    Attributes:
        name / description: the parameter's.
        default: the parameter's default as launch writes it ("true" / "false" for bools).
        choices: the allowed values (bools: "true", "false"); None = any value.
        value_type: the Python type launch_ros converts the argument to (str, bool, int, float).
    """

    name: str
    default: str
    description: str
    choices: tuple[str, ...] | None
    value_type: type


def launch_arguments() -> tuple[LaunchArgument, ...]:
    """The launch arguments of every parameter marked ``launch_argument``, in table order."""
    arguments = []
    for spec in PARAMETERS:
        if not spec.launch_argument:
            continue
        if spec.kind not in LAUNCH_TYPES:
            raise ValueError(f"parameter {spec.name} ({spec.kind}) cannot be a launch argument")
        choices = ("true", "false") if spec.kind == BOOL else (spec.choices or None)
        arguments.append(LaunchArgument(spec.name, _format(spec.default), spec.description, choices,
                                        LAUNCH_TYPES[spec.kind]))
    return tuple(arguments)


def to_launch_markdown() -> str:
    """The README table of the launch arguments generated from this table."""
    lines = ["| Launch argument | Default | Choices | Description |", "|---|---|---|---|"]
    for argument in launch_arguments():
        choices = " \\| ".join(argument.choices) if argument.choices else ""
        default = f"`{argument.default}`" if argument.default else '`""`'
        lines.append(f"| `{argument.name}` | {default} | {choices} | {argument.description} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--yaml", action="store_true", help="print config/perception.yaml")
    group.add_argument("--markdown", action="store_true", help="print the README parameter table")
    group.add_argument("--launch-markdown", action="store_true", help="print the README launch-argument table")
    args = parser.parse_args(argv)
    sys.stdout.write(to_yaml() if args.yaml else to_markdown() if args.markdown else to_launch_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
