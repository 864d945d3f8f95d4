"""Training is deterministic and resumable (tiny architecture, a few steps)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
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


def test_curve_points_are_written_as_it_trains_and_survive_a_resume(tmp_path) -> None:
    """eval_every=2 on a 4-step run: points at steps 2 and 4 with every headline metric; a run
    stopped after step 2 and resumed has the same points and the same weights as a straight one."""
    from xsam_engine.training.curves import CURVE_NAME, HEADLINE, read_curve

    config = replace(_config(tmp_path, "curve"), eval_every=2, eval_scenes=1)
    assert train(replace(config, stop_after=2)) is None
    first = read_curve(tmp_path / "curve" / CURVE_NAME)["points"]
    assert [p["step"] for p in first] == [2]
    resumed = train(config)
    points = read_curve(tmp_path / "curve" / CURVE_NAME)["points"]
    assert [p["step"] for p in points] == [2, 4] and points[0] == first[0]
    for point in points:
        assert set(HEADLINE) <= set(point)
        assert 0.0 <= point["referring_absent"]["absent_returned_at_default"] <= 1.0
    assert 0 < points[0]["train_cpu_seconds"] < points[1]["train_cpu_seconds"]
    assert points[0]["train_wall_seconds"] < points[1]["train_wall_seconds"]
    straight = train(replace(_config(tmp_path, "plain")))
    state_a = load_pretrained(straight)[0].state_dict()
    state_b = load_pretrained(resumed)[0].state_dict()
    for key in state_a:  # evaluating in between changes nothing in training
        torch.testing.assert_close(state_a[key], state_b[key], rtol=0, atol=0, msg=key)
    metadata = json.loads((resumed / "config.json").read_text())["metadata"]
    assert metadata["training_cpu_seconds"] > 0 and metadata["training_hardware"].startswith("CPU")


def test_init_from_starts_at_the_saved_weights_and_refuses_another_architecture(tmp_path) -> None:
    saved = train(replace(_config(tmp_path, "first"), steps=1))
    config = replace(_config(tmp_path, "second"), steps=1, init_from=str(saved), learning_rate=1e-12, min_learning_rate=1e-12)
    continued = load_pretrained(train(config))[0].state_dict()
    original = load_pretrained(saved)[0].state_dict()
    for key in original:  # a step at lr 1e-12 leaves the (fp16-saved) weights as they were
        torch.testing.assert_close(continued[key], original[key], rtol=0, atol=1e-3, msg=key)
    with pytest.raises(ValueError, match="architecture"):
        train(replace(config, output_dir=str(tmp_path / "third"), architecture="tabletop"))


def test_cuda_device_without_a_gpu_is_refused_clearly(tmp_path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the refusal is for machines without one")
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        train(replace(_config(tmp_path, "cuda"), device="cuda"))


def test_absent_referring_negatives_have_no_target_and_name_no_object() -> None:
    """absent_fraction=1 on referring-only data: every referring example asks for an object that is
    not in its scene (resolves to nothing) and has no target mask (all queries learn "no object")."""
    from xsam_engine.processing import XSamImageProcessor
    from xsam_engine.requests import Task
    from xsam_engine.tabletop import generate_scene, resolve_expression
    from xsam_engine.training.data import TabletopTaskDataset
    from xsam_engine.training.trainer import build_model

    model, tokenizer = build_model(0, "tiny")
    processor = XSamImageProcessor(model.config.vision, model.config.mask_encoder)
    dataset = TabletopTaskDataset(processor, tokenizer, length=6, image_size=64, loss_size=32,
                                  task_weights={Task.REFERRING: 1.0}, absent_fraction=1.0)
    for index in range(len(dataset)):
        [example] = dataset[index].examples
        assert example.task is Task.REFERRING
        assert example.target_labels.numel() == 0 and example.target_masks.shape[0] == 0
        text = tokenizer.decode([i for i in example.input_ids[: len(example.input_ids) - example.answer_length] if i >= 0])
        expression = text.split("<p>")[1].split("</p>")[0].strip()
        assert resolve_expression(generate_scene(index, width=64, height=64), expression) == []


def test_best_mask_matching_picks_the_query_with_the_better_mask() -> None:
    """One target [1, 1, 0, 0]; query 0 is sure of the class (p ~ 1) with mask logits [1, 1, -1, -1],
    query 1 says "background" (p ~ 0) with the better mask [1.5, 1.5, -1.5, -1.5].
    Mask costs (BCE + dice, weights 5 / 5): query 0: BCE ln(1+e^-1) = 0.313, dice 1 - (2*2*0.731 + 1)
    / (2*0.731 + 2*0.269 + 2 + 1) = 0.215 -> 2.641; query 1: BCE ln(1+e^-1.5) = 0.201, dice 0.146
    -> 1.735. With the class cost (-2 x p): query 0 0.641 < query 1 1.735 -> "matched" picks 0;
    mask cost only -> "best_mask" picks 1."""
    from xsam_engine.training.losses import CriterionWeights, hungarian_match

    class_logits = torch.tensor([[20.0, -20.0], [-20.0, 20.0]])  # columns: the condition, background
    mask_logits = torch.tensor([[1.0, 1.0, -1.0, -1.0], [1.5, 1.5, -1.5, -1.5]])
    labels, masks = torch.tensor([0]), torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    rows, _ = hungarian_match(class_logits, mask_logits, labels, masks, CriterionWeights())
    assert rows.tolist() == [0]
    rows, _ = hungarian_match(class_logits, mask_logits, labels, masks, CriterionWeights(selection_target="best_mask"))
    assert rows.tolist() == [1]
    with pytest.raises(ValueError, match="selection_target"):
        CriterionWeights(selection_target="best")


def test_task_weights_override_the_defaults_and_refuse_bad_items() -> None:
    from xsam_engine.requests import Task
    from xsam_engine.training.data import DEFAULT_TASK_WEIGHTS, parse_task_weights

    assert parse_task_weights("") is None
    weights = parse_task_weights("panoptic=0.2, instance=0")
    assert weights[Task.PANOPTIC] == 0.2 and weights[Task.INSTANCE] == 0.0
    assert {t: w for t, w in weights.items() if t not in (Task.PANOPTIC, Task.INSTANCE)} == {
        t: w for t, w in DEFAULT_TASK_WEIGHTS.items() if t not in (Task.PANOPTIC, Task.INSTANCE)}
    for bad, message in (("panoptc=0.2", "TASK=WEIGHT"), ("panoptic=-1", ">= 0"), ("panoptic", "TASK=WEIGHT")):
        with pytest.raises(ValueError, match=message):
            parse_task_weights(bad)
