"""What the node's message side imports: no torch, no transformers (issue 13).

`xsam_ros.conversions` and every other module the node uses for messages, parameters, markers,
diagnostics, QoS and geometry must import with torch, transformers and the other model
libraries blocked, so that message conversion never pays for (or depends on) the model stack.
The import time is measured with `python -X importtime` in README "Architecture".
"""

from __future__ import annotations

import textwrap

MESSAGE_SIDE = (
    "xsam_ros.conversions", "xsam_ros.parameters", "xsam_ros.markers", "xsam_ros.diagnostics", "xsam_ros.qos",
    "xsam_ros.depth", "xsam_ros.pipeline", "xsam_ros.reporting", "xsam_ros.model", "xsam_ros.worker", "xsam_ros.geometry", "xsam_engine.requests", "xsam_engine.results",
    "xsam_engine.commands", "xsam_engine.tracking", "xsam_engine.visualization", "xsam_engine",
)

BLOCKED_IMPORT = textwrap.dedent('''
    import importlib, importlib.abc, sys

    BLOCKED = {"torch", "transformers", "tokenizers", "safetensors", "onnx", "onnxruntime", "tensorrt", "accelerate"}

    class BlockModelStack(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            if fullname.split(".")[0] in BLOCKED:
                raise ImportError(f"{fullname} is blocked: the message side must not import the model stack")
            return None

    sys.meta_path.insert(0, BlockModelStack())
    for name in MODULES:
        importlib.import_module(name)
    from xsam_engine import SegmentationRequest, Task
    from xsam_ros.conversions import text_to_request, ThresholdOverrides
    request = text_to_request("grasp the red cup", ["cup"], ["table"], ThresholdOverrides())
    assert request.task is Task.REFERRING and request.text == "red cup"
    print("ok")
''')


def test_message_side_imports_without_torch_or_transformers(run_python, ros_env, repo_root):
    code = f"MODULES = {MESSAGE_SIDE!r}\n" + BLOCKED_IMPORT
    result = run_python(code, env=ros_env, cwd=repo_root, timeout=120)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), f"{result.stdout}\n{result.stderr}"
