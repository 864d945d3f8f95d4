"""Training loop for the tabletop demo model: deterministic, resumable, with a progress bar."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..checkpoint import save_pretrained
from ..configuration_xsam import XSamConfig
from ..modeling_xsam import XSamModel
from ..processing import XSamImageProcessor
from ..tabletop.tokenizer import build_tokenizer
from ..tokenization import add_xsam_tokens
from .data import TabletopTaskDataset, collate
from .forward import training_losses

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class TrainingConfig:
    """Hyper-parameters of one training run (all of them end up in the model's metadata)."""

    output_dir: str = "runs/tabletop"
    steps: int = 1600
    batch_size: int = 4  # scenes per step
    tasks_per_scene: int = 3  # questions per scene (they share the scene's image features)
    learning_rate: float = 6e-4
    min_learning_rate: float = 2e-5
    weight_decay: float = 0.05
    warmup_steps: int = 120
    gradient_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 200
    num_workers: int = 1
    threads: int = 2
    image_size: int = 256
    loss_size: int = 128
    confusable_fraction: float = 0.0  # scenes with same-colour / same-category look-alikes (see data.py; README "Models")
    architecture: str = "tabletop"  # an XSamConfig constructor: "tabletop" (shipped) or "tiny" (tests)
    stop_after: int = 0  # stop this invocation after N steps (0 = run to the end); rerun to resume


def _learning_rate_factor(step: int, config: TrainingConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    floor = config.min_learning_rate / config.learning_rate
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def build_model(seed: int, architecture: str = "tabletop"):
    """A freshly initialised model of the given architecture and the tabletop tokenizer."""
    if architecture not in ("tabletop", "tiny"):
        raise ValueError(f"Unknown architecture {architecture!r}; use 'tabletop' or 'tiny'.")
    tokenizer = build_tokenizer()
    add_xsam_tokens(tokenizer)
    torch.manual_seed(seed)
    model = XSamModel(getattr(XSamConfig, architecture)(vocab_size=len(tokenizer)))
    return model, tokenizer


def train(config: TrainingConfig, export_dir: str | Path | None = None) -> Path | None:
    """Train (resuming from `output_dir/checkpoint.pt` if present) and export the model.

    Returns the directory of the exported model (`export_dir`, default `output_dir/model`), or
    None when `stop_after` ended this invocation early (the checkpoint holds the progress).
    """
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.threads)
    model, tokenizer = build_model(config.seed, config.architecture)
    special = add_xsam_tokens(tokenizer)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _learning_rate_factor(step, config))
    start_step, elapsed = 0, 0.0
    checkpoint_path = output_dir / CHECKPOINT_NAME
    if checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start_step, elapsed = int(state["step"]), float(state["elapsed"])
        logger.info("Resuming from step %d (%.0f s trained so far).", start_step, elapsed)
    processor = XSamImageProcessor(model.config.vision, model.config.mask_encoder)
    dataset = TabletopTaskDataset(
        processor, tokenizer, length=config.steps * config.batch_size, base_seed=config.seed * 10_000_000,
        image_size=config.image_size, loss_size=config.loss_size, tasks_per_scene=config.tasks_per_scene,
        confusable_fraction=config.confusable_fraction, add_bos=model.config.language.add_bos,
    )
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=range(start_step * config.batch_size, len(dataset)),
        num_workers=config.num_workers,
        collate_fn=collate,
        persistent_workers=config.num_workers > 0,
        # Its own generator: the default one would draw from the global RNG when the iterator
        # starts, so a resumed run would sample visual-prompt points differently.
        generator=torch.Generator().manual_seed(config.seed),
    )
    running: dict[str, float] = {}
    started = time.perf_counter() - elapsed
    progress = tqdm(loader, initial=start_step, total=config.steps, desc="training", unit="step", dynamic_ncols=True)
    step = start_step
    for batch in progress:
        losses = training_losses(model, batch, special, loss_size=config.loss_size)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.gradient_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        for name, value in losses.items():
            value = float(value.detach())
            running[name] = 0.98 * running.get(name, value) + 0.02 * value
        progress.set_postfix({k: f"{running[k]:.3f}" for k in ("total", "lm", "class", "select", "mask", "dice") if k in running})
        stopping = config.stop_after > 0 and step - start_step >= config.stop_after
        if step % config.checkpoint_every == 0 or step == config.steps or stopping:
            _save_checkpoint(checkpoint_path, model, optimizer, scheduler, step, time.perf_counter() - started)
        if stopping:
            break
    progress.close()
    if step < config.steps:
        logger.info("Stopped at step %d of %d; run the same command again to resume.", step, config.steps)
        return None
    seconds = time.perf_counter() - started
    export_dir = Path(export_dir) if export_dir else output_dir / "model"
    metadata = {
        "description": "Tiny X-SAM trained on procedurally generated tabletop scenes (xsam_engine.tabletop); "
        "a demo model, not the released X-SAM weights.",
        "training": asdict(config),
        "training_seconds": round(seconds, 1),
        "final_losses": {k: round(v, 4) for k, v in running.items()},
    }
    save_pretrained(model.eval(), tokenizer, export_dir, metadata=metadata, dtype=torch.float16)
    (output_dir / "training_summary.json").write_text(json.dumps(metadata, indent=2) + "\n")
    logger.info("Trained %d steps in %.0f s; model written to %s", step, seconds, export_dir)
    return export_dir


def _save_checkpoint(path: Path, model, optimizer, scheduler, step: int, elapsed: float) -> None:
    temporary = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "step": step,
            "elapsed": elapsed,
        },
        temporary,
    )
    temporary.replace(path)  # atomic: an interrupted save never corrupts the last checkpoint
