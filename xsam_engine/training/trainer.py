"""Training loop for the tabletop demo model: deterministic, resumable, with a progress bar.

Time is measured as wall seconds and as CPU seconds of the training processes (the main
process's `time.process_time` plus the data worker's, which reports its own with each batch);
both add up across resumed invocations and are stored in the checkpoint and the metadata.
With `eval_every`, held-out learning-curve points are written to `OUTPUT_DIR/curve.json`
(`curves.py`); their cost is reported apart and not counted as training time.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..checkpoint import save_pretrained
from ..configuration_xsam import XSamConfig
from ..modeling_xsam import XSamModel
from ..predictor import XSamPredictor
from ..processing import XSamImageProcessor
from ..tabletop.tokenizer import build_tokenizer
from ..tokenization import add_xsam_tokens
from .data import TabletopTaskDataset, collate, parse_task_weights
from .curves import CURVE_NAME, HEADLINE, append_point, evaluate_point, read_curve
from .forward import training_losses
from .losses import SELECTION_TARGETS, CriterionWeights

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
    architecture: str = "tabletop"  # an XSamConfig constructor: "tabletop", "tabletop_large" or "tiny" (tests)
    stop_after: int = 0  # stop this invocation after N steps (0 = run to the end); rerun to resume
    device: str = "cpu"  # "cuda" trains on a GPU (same data, same command); evaluation stays on the CPU
    absent_fraction: float = 0.0  # referring samples asked about an absent object, with no target (data.py)
    task_weights: str = ""  # e.g. "panoptic=0.2,instance=0.15": override data.DEFAULT_TASK_WEIGHTS ("" = defaults)
    selection: str = "matched"  # query matching: "matched" (class + mask cost) or "best_mask" (mask cost only; losses.py)
    eval_every: int = 0  # write a held-out learning-curve point every N steps (0 = none; curves.py)
    eval_scenes: int = 50  # held-out scenes per curve point (the fixed subset from seed 9e8)
    init_from: str = ""  # a saved model directory to start from instead of random weights ("" = none)


def _learning_rate_factor(step: int, config: TrainingConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    floor = config.min_learning_rate / config.learning_rate
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


ARCHITECTURES = ("tabletop", "tabletop_large", "tiny")


def build_model(seed: int, architecture: str = "tabletop"):
    """A freshly initialised model of the given architecture and the tabletop tokenizer."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {architecture!r}; use one of {ARCHITECTURES}.")
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
    device = _training_device(config.device)
    if config.selection not in SELECTION_TARGETS:
        raise ValueError(f"selection must be one of {SELECTION_TARGETS}, got {config.selection!r}.")
    if not 0.0 <= config.absent_fraction <= 1.0:
        raise ValueError(f"absent_fraction must be in [0, 1], got {config.absent_fraction}.")
    model, tokenizer = build_model(config.seed, config.architecture)
    special = add_xsam_tokens(tokenizer)
    model.to(device).train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _learning_rate_factor(step, config))
    start_step, elapsed, cpu_before = 0, 0.0, 0.0
    checkpoint_path = output_dir / CHECKPOINT_NAME
    if checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start_step, elapsed = int(state["step"]), float(state["elapsed"])
        cpu_before = float(state.get("cpu_seconds", 0.0))
        logger.info("Resuming from step %d (%.0f s trained so far).", start_step, elapsed)
    elif config.init_from:
        _initialise_from(model, config.init_from)
    clock = _Clock(elapsed, cpu_before)
    curve_path = output_dir / CURVE_NAME
    if (config.eval_every > 0 and start_step > 0 and start_step % config.eval_every == 0
            and not any(p["step"] == start_step for p in read_curve(curve_path)["points"])):
        _curve_point(model, tokenizer, config, start_step, clock, curve_path)  # a point lost to a stop
    processor = XSamImageProcessor(model.config.vision, model.config.mask_encoder)
    dataset = TabletopTaskDataset(
        processor, tokenizer, length=config.steps * config.batch_size, base_seed=config.seed * 10_000_000,
        image_size=config.image_size, loss_size=config.loss_size, tasks_per_scene=config.tasks_per_scene,
        confusable_fraction=config.confusable_fraction, absent_fraction=config.absent_fraction,
        add_bos=model.config.language.add_bos, task_weights=parse_task_weights(config.task_weights),
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
    weights = CriterionWeights(selection_target=config.selection)
    progress = tqdm(loader, initial=start_step, total=config.steps, desc="training", unit="step", dynamic_ncols=True)
    step = start_step
    for batch in progress:
        clock.worker_report(batch.pop("worker_cpu", None))
        losses = training_losses(model, batch, special, weights=weights, loss_size=config.loss_size)
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
        evaluating = config.eval_every > 0 and (step % config.eval_every == 0 or step == config.steps)
        if step % config.checkpoint_every == 0 or step == config.steps or stopping or evaluating:
            _save_checkpoint(checkpoint_path, model, optimizer, scheduler, step, clock)
        if evaluating:
            _curve_point(model, tokenizer, config, step, clock, curve_path)
        if stopping:
            break
    progress.close()
    if step < config.steps:
        logger.info("Stopped at step %d of %d; run the same command again to resume.", step, config.steps)
        return None
    export_dir = Path(export_dir) if export_dir else output_dir / "model"
    metadata = {
        "description": "Tiny X-SAM trained on procedurally generated tabletop scenes (xsam_engine.tabletop); "
        "a demo model, not the released X-SAM weights.",
        "training": asdict(config),
        "training_seconds": round(clock.wall(), 1),
        "training_cpu_seconds": round(clock.cpu(), 1),
        "training_hardware": _hardware(device, config.threads),
        "final_losses": {k: round(v, 4) for k, v in running.items()},
    }
    save_pretrained(model.eval(), tokenizer, export_dir, metadata=metadata, dtype=torch.float16)
    (output_dir / "training_summary.json").write_text(json.dumps(metadata, indent=2) + "\n")
    logger.info("Trained %d steps in %.0f s (%.0f CPU s); model written to %s", step, clock.wall(), clock.cpu(), export_dir)
    return export_dir


class _Clock:
    """Training wall and CPU seconds, carried over from earlier invocations; pauses for curve points."""

    def __init__(self, wall_before: float, cpu_before: float) -> None:
        self._wall_start = time.perf_counter() - wall_before
        self._cpu_start = time.process_time() - cpu_before
        self._workers: dict[int, float] = {}  # worker id -> its process CPU seconds in this invocation

    def worker_report(self, report: tuple[int, float] | None) -> None:
        if report is not None:
            self._workers[report[0]] = report[1]

    def wall(self) -> float:
        return time.perf_counter() - self._wall_start

    def cpu(self) -> float:
        return time.process_time() - self._cpu_start + sum(self._workers.values())

    def paused(self):
        clock = self

        class _Pause:
            def __enter__(self):
                self.wall, self.cpu = time.perf_counter(), time.process_time()

            def __exit__(self, *exc):
                clock._wall_start += time.perf_counter() - self.wall
                clock._cpu_start += time.process_time() - self.cpu

        return _Pause()

    def state(self) -> dict:
        # Worker CPU is folded into the total: a resumed invocation starts new workers at zero.
        return {"elapsed": self.wall(), "cpu_seconds": self.cpu()}


def _initialise_from(model: XSamModel, directory: str) -> None:
    """Copy a saved model's weights (any float dtype) into `model`; the architectures must match."""
    from ..checkpoint import load_pretrained

    source, _ = load_pretrained(directory)

    def shape(config: XSamConfig) -> dict:  # the architecture: not thresholds, not the prompt form (BOS)
        values = config.to_dict()
        values.pop("postprocess")
        values["language"].pop("add_bos")
        return values

    if shape(source.config) != shape(model.config):
        raise ValueError(f"--init-from {directory}: its architecture ({source.config.name}) differs from "
                         f"--architecture ({model.config.name}); pick the matching architecture.")
    model.load_state_dict({k: v.float() for k, v in source.state_dict().items()})
    logger.info("Initialised from %s.", directory)


def _training_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu.")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {name!r}.")
    return device


def _hardware(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        return f"CUDA {torch.cuda.get_device_name(device)}"
    return f"CPU, {threads} thread(s), {platform.processor() or platform.machine()}"


def _curve_point(model, tokenizer, config: TrainingConfig, step: int, clock: _Clock, curve_path: Path) -> None:
    """Evaluate the current weights on the fixed held-out subset (on the CPU) and append the point."""
    with clock.paused():
        device = model.device
        evaluated = copy.deepcopy(model).to("cpu").eval() if device.type != "cpu" else model.eval()
        started_cpu = time.process_time()
        point = {"step": step, "train_wall_seconds": round(clock.wall(), 1), "train_cpu_seconds": round(clock.cpu(), 1)}
        point.update(evaluate_point(XSamPredictor(evaluated, tokenizer), num_scenes=config.eval_scenes))
        point["eval_cpu_seconds"] = round(time.process_time() - started_cpu, 1)
        append_point(curve_path, asdict(config), point)
        model.train()
        logger.info("Curve point at step %d: %s", step, {k: v for k, v in point.items() if k in HEADLINE})


def _save_checkpoint(path: Path, model, optimizer, scheduler, step: int, clock: _Clock) -> None:
    temporary = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "step": step,
            **clock.state(),
        },
        temporary,
    )
    temporary.replace(path)  # atomic: an interrupted save never corrupts the last checkpoint
