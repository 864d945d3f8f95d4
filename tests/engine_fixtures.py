"""Shared helpers for engine tests: a tiny random-weight model, its tokenizer and test images."""

from __future__ import annotations

import numpy as np
import torch

from xsam_engine.configuration_xsam import XSamConfig
from xsam_engine.modeling_xsam import XSamModel
from xsam_engine.predictor import XSamPredictor
from xsam_engine.requests import SegmentationRequest, Task, VisualPrompt
from xsam_engine.tabletop.scenes import generate_scene
from xsam_engine.tabletop.tokenizer import build_tokenizer
from xsam_engine.tokenization import add_xsam_tokens


def tiny_model_and_tokenizer(seed: int = 0):
    """A tiny X-SAM (random weights) with the tabletop tokenizer (X-SAM tokens added)."""
    tokenizer = build_tokenizer()
    add_xsam_tokens(tokenizer)
    torch.manual_seed(seed)
    model = XSamModel(XSamConfig.tiny(vocab_size=len(tokenizer))).eval()
    return model, tokenizer


def tiny_predictor(seed: int = 0) -> XSamPredictor:
    model, tokenizer = tiny_model_and_tokenizer(seed)
    return XSamPredictor(model, tokenizer)


def scene_image(seed: int = 1, width: int = 96, height: int = 80) -> np.ndarray:
    return generate_scene(seed, width=width, height=height).image


# One request per task (coordinates fit the 96x80 scene_image and larger scenes).
VOCABULARY = ("cup", "bowl", "table")

TASK_REQUESTS = {
    Task.REFERRING: SegmentationRequest(Task.REFERRING, text="red cup", score_threshold=0.0),
    Task.REASONING: SegmentationRequest(Task.REASONING, text="something to drink from", max_new_tokens=6),
    Task.SEMANTIC: SegmentationRequest(Task.SEMANTIC, vocabulary=VOCABULARY),
    Task.INSTANCE: SegmentationRequest(Task.INSTANCE, vocabulary=VOCABULARY, score_threshold=0.0),
    Task.PANOPTIC: SegmentationRequest(Task.PANOPTIC, vocabulary=VOCABULARY, stuff_vocabulary=("table",), score_threshold=0.0),
    Task.OPEN_VOCABULARY: SegmentationRequest(Task.OPEN_VOCABULARY, vocabulary=("mug",), score_threshold=0.0),
    Task.INTERACTIVE: SegmentationRequest(Task.INTERACTIVE, regions=(VisualPrompt.point(40, 30),)),
    Task.VGD: SegmentationRequest(
        Task.VGD, regions=(VisualPrompt.from_box(10, 10, 30, 30), VisualPrompt.scribble(np.array([[50, 50], [60, 55]]))),
        score_threshold=0.0,
    ),
    Task.GCG: SegmentationRequest(Task.GCG, max_new_tokens=6),
}
