"""xsam_engine: ROS-free X-SAM inference ("any segmentation") for robots.

Typical use::

    from xsam_engine import XSamPredictor, SegmentationRequest, Task
    predictor = XSamPredictor.from_pretrained()          # shipped tabletop demo model
    predictor.set_image(rgb)                              # (H, W, 3) uint8
    result = predictor.segment(SegmentationRequest(Task.REFERRING, text="red cup"))
"""

from .configuration_xsam import XSamConfig
from .requests import PromptKind, SegmentationRequest, Task, VisualPrompt
from .results import Condition, Instance, SegmentationResult

__all__ = [
    "Condition",
    "Instance",
    "PromptKind",
    "SegmentationRequest",
    "SegmentationResult",
    "Task",
    "VisualPrompt",
    "XSamConfig",
    "XSamModel",
    "XSamPredictor",
]


def __getattr__(name: str):
    # torch-heavy classes load lazily so `import xsam_engine` stays cheap.
    if name == "XSamModel":
        from .modeling_xsam import XSamModel

        return XSamModel
    if name == "XSamPredictor":
        from .predictor import XSamPredictor

        return XSamPredictor
    raise AttributeError(f"module 'xsam_engine' has no attribute {name!r}")
