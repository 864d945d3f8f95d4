"""The xsam_ros messages: definitions, a real two-process rclpy round trip, import paths.

Also checks that the ROS-free engine (xsam_engine) imports with every ROS package blocked.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import msg_fixtures as fx
from xsam_ros.msg import InstanceMask, InstanceMaskArray, SegmentationCommand, StageTiming

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent


def test_message_constants():
    assert [getattr(SegmentationCommand, f'TASK_{name}') for name in (
        'AUTO', 'REFERRING', 'REASONING', 'SEMANTIC', 'INSTANCE', 'PANOPTIC',
        'OPEN_VOCABULARY', 'INTERACTIVE', 'VGD', 'GCG')] == list(range(10))
    assert [getattr(InstanceMaskArray, f'LABEL_IMAGE_{name}') for name in (
        'NONE', 'SEMANTIC', 'PANOPTIC', 'INSTANCE')] == [0, 1, 2, 3]


def test_message_fields():
    # The field lists other code is written against; a change here is an interface change.
    assert list(InstanceMask.get_fields_and_field_types()) == [
        'id', 'label', 'class_id', 'score', 'phrase', 'roi', 'mask', 'area', 'has_3d',
        'centroid', 'extent', 'depth_pixels']
    assert list(InstanceMaskArray.get_fields_and_field_types()) == [
        'header', 'request_id', 'task', 'prompt', 'response_text', 'success', 'error',
        'message', 'score_threshold', 'mask_threshold', 'overlap_threshold', 'image_width', 'image_height', 'tracking', 'instances', 'vocabulary',
        'label_image_type', 'label_image', 'timings']
    assert list(SegmentationCommand.get_fields_and_field_types()) == [
        'header', 'request_id', 'task', 'text', 'points', 'point_labels', 'boxes',
        'scribbles', 'masks', 'vocabulary', 'stuff_vocabulary', 'continuous',
        'score_threshold', 'mask_threshold', 'overlap_threshold']
    assert StageTiming.get_fields_and_field_types() == {
        'stage': 'string', 'milliseconds': 'float'}


@pytest.mark.parametrize('name', sorted(fx.BUILDERS))
def test_reference_messages_set_every_field(name):
    assert fx.default_valued_fields(fx.BUILDERS[name]()) == []


def _finish(proc, label, timeout):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f'{label} did not finish in {timeout} s\nstdout:\n{out}\nstderr:\n{err}')
    assert proc.returncode == 0, (
        f'{label} exited with {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}')
    return out


def test_roundtrip_between_two_processes(spawn_python, ros_namespace, tmp_path):
    from rclpy.serialization import deserialize_message

    out_dir = tmp_path / 'received'
    receiver = spawn_python([TESTS_DIR / 'msg_roundtrip_receiver.py',
                             '--namespace', ros_namespace, '--out-dir', out_dir,
                             '--timeout', 60])
    publisher = spawn_python([TESTS_DIR / 'msg_roundtrip_publisher.py',
                              '--namespace', ros_namespace, '--timeout', 60])
    _finish(publisher, 'publisher', 90)
    _finish(receiver, 'receiver', 90)

    for name, (msg_type, _topic) in fx.TOPICS.items():
        expected = fx.BUILDERS[name]()
        received = deserialize_message((out_dir / f'{name}.cdr').read_bytes(), msg_type)
        assert fx.field_differences(expected, received) == [], name
        # What the receiving process itself saw, field by field.
        seen = json.loads((out_dir / f'{name}.json').read_text(encoding='utf-8'))
        assert seen == json.loads(json.dumps(fx.msg_to_dict(expected))), name
        assert received == expected, name

    array = deserialize_message((out_dir / 'instance_mask_array.cdr').read_bytes(),
                                InstanceMaskArray)
    # The 640x480 mono8 mask crop, pixel for pixel, and where it sits in the label image.
    big = array.instances[0]
    assert (big.roi.x_offset, big.roi.y_offset, big.roi.width, big.roi.height) == fx.BIG_ROI
    assert (big.mask.width, big.mask.height, big.mask.encoding, big.mask.step) == (
        640, 480, 'mono8', 640)
    crop = fx.image_pixels(big.mask)
    assert crop.shape == (480, 640)
    assert np.array_equal(crop, fx.big_mask_array())
    assert big.area == int(np.count_nonzero(crop))
    assert (array.label_image.encoding, array.label_image.width,
            array.label_image.height) == ('16UC1', 1280, 720)
    labels = fx.image_pixels(array.label_image)
    assert np.array_equal(labels, fx.label_image_array())
    x, y, w, h = fx.BIG_ROI
    assert np.array_equal(labels[y:y + h, x:x + w] == 1, crop == 255)
    assert [t.stage for t in array.timings] == ['preprocess', 'llm', 'ros_conversion']


def _env_without_repo_on_pythonpath(ros_env):
    env = dict(ros_env)
    parts = [p for p in env.get('PYTHONPATH', '').split(os.pathsep)
             if p and Path(p).resolve() != REPO_ROOT]
    if parts:
        env['PYTHONPATH'] = os.pathsep.join(parts)
    else:
        env.pop('PYTHONPATH', None)
    return env


IMPORT_CHECK = textwrap.dedent('''
    import json, xsam_ros, xsam_ros.msg
    print(json.dumps({"path": list(xsam_ros.__path__), "msg": xsam_ros.msg.__file__,
                      "mask": repr(xsam_ros.msg.InstanceMask())[:40]}))
''')


@pytest.mark.parametrize('where', ['repo_root', 'elsewhere_pythonpath', 'elsewhere_venv'])
def test_xsam_ros_msg_importable(where, run_python, ros_env, tmp_path):
    """xsam_ros.msg (generated, installed) and the source xsam_ros/ merge into one package."""
    if where == 'repo_root':
        result = run_python(IMPORT_CHECK, env=_env_without_repo_on_pythonpath(ros_env),
                            cwd=REPO_ROOT)
    elif where == 'elsewhere_pythonpath':
        result = run_python(IMPORT_CHECK, cwd=tmp_path)
    else:
        # Only the virtual environment's own path configuration (make setup's .pth file).
        env = _env_without_repo_on_pythonpath(ros_env)
        result = run_python(IMPORT_CHECK, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout.splitlines()[0])
    assert info['mask'].startswith('xsam_ros.msg.InstanceMask(')
    paths = [Path(p).resolve() for p in info['path']]
    assert Path(info['msg']).resolve().parent.parent in paths
    if where != 'elsewhere_venv' or (REPO_ROOT / 'xsam_ros') in paths:
        assert REPO_ROOT / 'xsam_ros' in paths, info
        # The generated code is never in the source package directory.
        assert REPO_ROOT / 'xsam_ros' not in Path(info['msg']).resolve().parents


ROS_FREE_IMPORT = textwrap.dedent('''
    import importlib, importlib.abc, pkgutil, sys, traceback

    BLOCKED = {
        "rclpy", "rcl", "rcl_interfaces", "rcutils", "rmw", "rpyutils", "rosidl_runtime_py",
        "rosidl_parser", "rosidl_pycommon", "ament_index_python", "launch", "launch_ros",
        "builtin_interfaces", "std_msgs", "sensor_msgs", "geometry_msgs",
        "visualization_msgs", "diagnostic_msgs", "std_srvs", "action_msgs",
        "lifecycle_msgs", "unique_identifier_msgs", "service_msgs", "rosgraph_msgs",
        "type_description_interfaces", "cv_bridge", "message_filters", "tf2_ros",
        "tf2_py", "vision_msgs", "xsam_ros",
    }

    class BlockRos(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            top = fullname.split(".")[0]
            if top in BLOCKED or top.startswith(("rosidl", "rcl", "rmw", "ament")):
                raise ImportError(f"{fullname} is blocked: xsam_engine must not need ROS")
            return None

    sys.meta_path.insert(0, BlockRos())
    import xsam_engine
    failures = []
    modules = ["xsam_engine"]
    def onerror(name):
        failures.append((name, traceback.format_exc()))
    for info in pkgutil.walk_packages(xsam_engine.__path__, "xsam_engine.", onerror=onerror):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue
        modules.append(info.name)
        try:
            importlib.import_module(info.name)
        except BaseException:
            failures.append((info.name, traceback.format_exc()))
    for name, tb in failures:
        print(f"FAILED {name}\\n{tb}", file=sys.stderr)
    print(f"imported {len(modules) - len(failures)} of {len(modules)} modules")
    sys.exit(1 if failures else 0)
''')


def test_xsam_engine_imports_without_ros(run_python, ros_env):
    if not (REPO_ROOT / 'xsam_engine').is_dir():
        pytest.skip('xsam_engine/ does not exist yet')
    env = {k: v for k, v in ros_env.items() if not k.startswith(('AMENT_', 'ROS_'))}
    result = run_python(ROS_FREE_IMPORT, env=env, cwd=REPO_ROOT, timeout=600)
    assert result.returncode == 0, f'{result.stdout}\n{result.stderr}'
