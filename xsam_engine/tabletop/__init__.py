"""Procedural tabletop scenes and X-SAM task samples for training and evaluating the demo model.

Typical use::

    from xsam_engine.tabletop import generate_scene, sample_task
    scene = generate_scene(seed=3)                      # RGB, depth, instance / semantic maps
    sample = sample_task(scene, Task.REFERRING, np.random.default_rng(3))
    sample.question, sample.answer, sample.target_masks
"""

from .backgrounds import TABLE_STYLES
from .catalog import ALL_CLASSES, CLASSES, COLOURS, STUFF_CLASSES, TABLE_CLASS_ID
from .language import describe_object, parse_expression, resolve_expression, sample_referring_expression
from .reasoning import resolve_reasoning, sample_reasoning
from .scenes import CameraIntrinsics, Scene, SceneObject, SceneOptions, generate_scene, seeds_with_one
from .sequences import generate_sequence
from .tasks import TaskSample, sample_all_tasks, sample_task

__all__ = [
    "ALL_CLASSES",
    "CLASSES",
    "COLOURS",
    "STUFF_CLASSES",
    "TABLE_CLASS_ID",
    "TABLE_STYLES",
    "CameraIntrinsics",
    "Scene",
    "SceneObject",
    "SceneOptions",
    "TaskSample",
    "build_tokenizer",
    "describe_object",
    "generate_scene",
    "generate_sequence",
    "parse_expression",
    "resolve_expression",
    "resolve_reasoning",
    "sample_all_tasks",
    "sample_reasoning",
    "sample_referring_expression",
    "sample_task",
    "seeds_with_one",
]


def __getattr__(name: str):
    # The tokenizer pulls in transformers; load it only when asked for.
    if name == "build_tokenizer":
        from .tokenizer import build_tokenizer

        return build_tokenizer
    raise AttributeError(f"module 'xsam_engine.tabletop' has no attribute {name!r}")
