"""xsam_engine: ROS-free X-SAM inference ("any segmentation") for robots.

Typical use::

    from xsam_engine import XSamPredictor, SegmentationRequest, Task
    predictor = XSamPredictor.from_pretrained()          # shipped tabletop demo model
    predictor.set_image(rgb)                              # (H, W, 3) uint8
    result = predictor.segment(SegmentationRequest(Task.REFERRING, text="red cup"))
"""

from importlib import import_module

# Every public name loads on first use, so that `import xsam_engine.requests` (what the ROS node's
# message conversions need) imports neither torch nor transformers (README "Architecture").
_PUBLIC = {
    "Condition": "results",
    "Instance": "results",
    "PromptKind": "requests",
    "SegmentationRequest": "requests",
    "SegmentationResult": "results",
    "Task": "requests",
    "VisualPrompt": "requests",
    "XSamConfig": "configuration_xsam",
    "XSamModel": "modeling_xsam",
    "XSamPredictor": "predictor",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module 'xsam_engine' has no attribute {name!r}")
