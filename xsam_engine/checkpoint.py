"""Checkpoints: the official X-SAM release layout (via an explicit key map) and our own format.

Only safetensors or `torch.load(weights_only=True)` are used: nothing in a checkpoint is executed.

Our format is a directory with `model.safetensors`, `config.json` (an `XSamConfig` plus metadata)
and the tokenizer files (`tokenizer.json`, `tokenizer_config.json`, ...).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from .configuration_xsam import XSamConfig
from .modeling_xsam import XSamModel
from .tokenization import add_xsam_tokens

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"

# Official ([A] release and [M] main) prefixes -> our module names. Order matters: first match wins.
OFFICIAL_KEY_MAP: tuple[tuple[str, str], ...] = (
    ("visual_encoder.vision_model.", "vision_encoder.siglip."),
    ("vision_encoder.vision_model.", "vision_encoder.siglip."),  # [M] renamed visual_encoder
    ("visual_projector.", "vision_encoder.projector."),
    ("segmentor.encoder.", "mask_encoder.sam."),
    ("seg_projector.", "mask_encoder.projector."),
    ("seg_connector.", "mask_encoder.connector."),
    ("llm_projector.", "language_model.condition_projector."),
    ("llm.", "language_model.llm."),
    ("segmentor.pixel_decoder.", "seg_decoder.pixel_decoder."),
    ("segmentor.decoder.", "seg_decoder.transformer."),
    ("segmentor.class_predictor.logit_scale", "seg_decoder.logit_scale"),  # [M]
    ("segmentor.logit_scale", "seg_decoder.logit_scale"),
    ("bg_embeds.", "seg_decoder.background_embedding."),
)

# Released keys of modules X-SAM loads but never uses (spec pitfall 19); skipped, and reported.
OFFICIAL_UNUSED_PREFIXES: tuple[str, ...] = (
    "segmentor.shared_image_embedding.",
    "segmentor.encoder.neck.",
    "visual_encoder.vision_model.head.",
    "vision_encoder.vision_model.head.",
)


@dataclass
class LoadReport:
    """What happened to each key while loading a state dict."""

    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read `.safetensors` or a torch pickle (`.bin`/`.pt`/`.pth`) with `weights_only=True`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    if path.suffix in (".bin", ".pt", ".pth"):
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"{path} does not hold a state dict (found {type(state).__name__}).")
        return state
    raise ValueError(f"Unsupported checkpoint type {path.suffix!r} for {path}; use .safetensors or .bin/.pt.")


def _unused_siglip_layer(our_key: str, config: XSamConfig) -> bool:
    """SigLIP layers after `select_layer` are in the release but never run (we do not build them)."""
    match = re.match(r"vision_encoder\.siglip\.encoder\.layers\.(\d+)\.", our_key)
    return bool(match) and int(match.group(1)) >= config.vision.used_layers


def convert_official_state_dict(
    state_dict: dict[str, torch.Tensor], config: XSamConfig
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Rename official keys to ours. Returns (converted, unused official keys, unmapped official keys)."""
    converted: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    unmapped: list[str] = []
    for key, tensor in state_dict.items():
        if key.startswith(OFFICIAL_UNUSED_PREFIXES):
            unused.append(key)
            continue
        for official, ours in OFFICIAL_KEY_MAP:
            if key.startswith(official):
                our_key = ours + key[len(official) :]
                if _unused_siglip_layer(our_key, config):
                    unused.append(key)
                else:
                    converted[our_key] = tensor
                break
        else:
            unmapped.append(key)
    return converted, unused, unmapped


def to_official_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our keys -> the released ([A]) naming (inverse of the key map; used to write test checkpoints)."""
    inverse: list[tuple[str, str]] = []
    seen: set[str] = set()
    for official, ours in OFFICIAL_KEY_MAP:
        if ours not in seen and not official.startswith(("vision_encoder.", "segmentor.class_predictor")):
            inverse.append((ours, official))
            seen.add(ours)
    result = {}
    for key, tensor in state_dict.items():
        for ours, official in inverse:
            if key.startswith(ours):
                result[official + key[len(ours) :]] = tensor
                break
        else:
            raise ValueError(f"No official name for key {key!r}.")
    return result


def load_into(model: XSamModel, state_dict: dict[str, torch.Tensor], strict: bool = True) -> LoadReport:
    """Copy a state dict (our naming) into `model`.

    Shape mismatches are always refused, listing every offending key with both shapes. With
    `strict`, missing or unexpected keys are refused too; otherwise they are reported.
    """
    expected = model.state_dict()
    mismatched = [
        f"{key}: checkpoint {tuple(tensor.shape)} vs model {tuple(expected[key].shape)}"
        for key, tensor in state_dict.items()
        if key in expected and tensor.shape != expected[key].shape
    ]
    if mismatched:
        raise ValueError(
            "The checkpoint does not fit this configuration (is it the right XSamConfig?):\n  " + "\n  ".join(mismatched)
        )
    report = LoadReport(
        missing=sorted(set(expected) - set(state_dict)),
        unexpected=sorted(set(state_dict) - set(expected)),
    )
    if strict and (report.missing or report.unexpected):
        raise ValueError(
            f"Checkpoint keys do not match the model: {len(report.missing)} missing {report.missing[:20]}, "
            f"{len(report.unexpected)} unexpected {report.unexpected[:20]}."
        )
    with torch.no_grad():
        for key, tensor in state_dict.items():
            if key in expected:
                expected[key].copy_(tensor.to(expected[key].dtype))
                report.loaded += 1
    return report


def load_official(
    checkpoint_path: str | Path,
    tokenizer_path: str | Path,
    config: XSamConfig | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    strict: bool = True,
) -> tuple[XSamModel, PreTrainedTokenizerBase, LoadReport]:
    """Load the released single-file checkpoint (`pytorch_model.bin` or a safetensors copy).

    Args:
        checkpoint_path: the released `.../pytorch_model.bin` (or `.safetensors`).
        tokenizer_path: a local copy of the `Phi-3-mini-4k-instruct` tokenizer; X-SAM's
            `<SEG>`, `<p>`, `</p>` are added to it as the official code does.
        config: defaults to `XSamConfig.released()`.
        dtype: defaults to the checkpoint's dtype as stored (bf16 for the release).
    """
    config = config or XSamConfig.released()
    if not Path(tokenizer_path).is_dir():
        raise FileNotFoundError(f"No tokenizer directory at {tokenizer_path} (expected the Phi-3-mini-4k-instruct tokenizer files).")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path), padding_side="right")
    add_xsam_tokens(tokenizer)
    if len(tokenizer) != config.language.vocab_size:
        raise ValueError(
            f"The tokenizer at {tokenizer_path} has {len(tokenizer)} tokens after adding <SEG>, <p>, </p>, "
            f"but the configuration expects {config.language.vocab_size}; use the Phi-3-mini-4k-instruct tokenizer."
        )
    official = read_state_dict(checkpoint_path)
    converted, unused, unmapped = convert_official_state_dict(official, config)
    if unmapped:
        message = f"{len(unmapped)} checkpoint keys have no place in X-SAM: {unmapped[:20]}"
        if strict:
            raise ValueError(message)
        logger.warning(message)
    model = XSamModel(config)
    report = load_into(model, converted, strict=strict)
    report.unused = unused
    report.unexpected.extend(unmapped)
    logger.info("Loaded %d tensors from %s; skipped %d unused release keys.", report.loaded, checkpoint_path, len(unused))
    target_dtype = dtype or next(iter(converted.values())).dtype
    return model.to(device=device, dtype=target_dtype).eval(), tokenizer, report


def save_pretrained(
    model: XSamModel,
    tokenizer: PreTrainedTokenizerBase,
    directory: str | Path,
    metadata: dict | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write `model.safetensors`, `config.json` and the tokenizer files to `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        key: (tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor).contiguous().cpu()
        for key, tensor in model.state_dict().items()
    }
    save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "xsam_ros", "version": str(FORMAT_VERSION)})
    config = {"format_version": FORMAT_VERSION, "config": model.config.to_dict(), "metadata": metadata or {}}
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    tokenizer.save_pretrained(str(directory))
    return directory


def read_model_metadata(directory: str | Path) -> dict:
    """The `metadata` block of a saved model's config.json."""
    return json.loads((Path(directory) / CONFIG_NAME).read_text()).get("metadata", {})


def load_pretrained(
    directory: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> tuple[XSamModel, PreTrainedTokenizerBase]:
    """Load a model written by `save_pretrained`; `None` loads the shipped tabletop demo model."""
    if directory is None:
        directory = DEFAULT_MODEL_DIR
        logger.warning(
            "Loading the built-in tabletop demo model (a tiny X-SAM trained on generated tabletop scenes), "
            "not the released X-SAM weights; pass a model path for real-world use."
        )
    directory = Path(directory)
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        if not (directory / name).is_file():
            raise FileNotFoundError(
                f"{directory} is not an xsam model directory: {name} is missing "
                "(expected model.safetensors, config.json and tokenizer files written by save_pretrained)."
            )
    stored = json.loads((directory / CONFIG_NAME).read_text())
    if stored.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{directory / CONFIG_NAME} has format_version {stored.get('format_version')}, expected {FORMAT_VERSION}.")
    config = XSamConfig.from_dict(stored["config"])
    model = XSamModel(config)
    load_into(model, read_state_dict(directory / WEIGHTS_NAME), strict=True)
    tokenizer = AutoTokenizer.from_pretrained(str(directory), padding_side="right")
    model = model.to(device=device, dtype=dtype or torch.float32).eval()
    return model, tokenizer
