"""Shared helpers for engine tests: a tiny random-weight model, its tokenizer and test images."""

from __future__ import annotations

import numpy as np
import torch

from xsam_engine.configuration_xsam import XSamConfig
from xsam_engine.modeling_xsam import XSamModel
from xsam_engine.predictor import XSamPredictor
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
