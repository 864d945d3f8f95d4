"""Training is deterministic and resumable (tiny architecture, a few steps)."""

from __future__ import annotations

from dataclasses import replace

import torch

from xsam_engine.checkpoint import load_pretrained
from xsam_engine.training.trainer import TrainingConfig, train


def _config(tmp_path, name: str) -> TrainingConfig:
    return TrainingConfig(
        output_dir=str(tmp_path / name), steps=4, batch_size=2, tasks_per_scene=2, warmup_steps=1, checkpoint_every=100,
        num_workers=0, threads=1, image_size=64, loss_size=32, architecture="tiny",
    )


def test_interrupted_and_resumed_training_equals_an_uninterrupted_run(tmp_path) -> None:
    straight = train(_config(tmp_path, "straight"))
    interrupted = _config(tmp_path, "interrupted")
    assert train(replace(interrupted, stop_after=2)) is None
    resumed = train(interrupted)
    model_a, _ = load_pretrained(straight)
    model_b, _ = load_pretrained(resumed)
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        torch.testing.assert_close(state_a[key], state_b[key], rtol=0, atol=0, msg=key)
    initial = load_pretrained(train(replace(_config(tmp_path, "short"), steps=1)))[0].state_dict()
    assert any(not torch.equal(initial[k], state_a[k]) for k in state_a)  # training changed the weights
