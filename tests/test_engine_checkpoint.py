"""Checkpoint loading: official release layout via the key map, our own format, and refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine_fixtures import scene_image, tiny_model_and_tokenizer
from xsam_engine import SegmentationRequest, Task
from xsam_engine.checkpoint import (
    convert_official_state_dict,
    load_into,
    load_official,
    load_pretrained,
    read_state_dict,
    save_pretrained,
    to_official_state_dict,
)
from xsam_engine.configuration_xsam import XSamConfig
from xsam_engine.modeling_xsam import XSamModel
from xsam_engine.predictor import XSamPredictor
from xsam_engine.tabletop.tokenizer import build_tokenizer

REQUEST = SegmentationRequest(Task.INSTANCE, vocabulary=("cup", "bowl"), score_threshold=0.0)


def _run(model, tokenizer, image):
    predictor = XSamPredictor(model, tokenizer)
    predictor.set_image(image)
    return predictor.segment(REQUEST)


def _assert_same_results(a, b) -> None:
    assert len(a.instances) == len(b.instances) > 0
    for x, y in zip(a.instances, b.instances):
        assert np.array_equal(x.mask, y.mask) and x.score == y.score and x.label == y.label


def _official_checkpoint(model: XSamModel) -> dict[str, torch.Tensor]:
    """Our weights written in the release's naming, plus the keys the release has but X-SAM never uses."""
    official = to_official_state_dict(model.state_dict())
    config = model.config
    hidden = config.vision.hidden_size
    unused_layer = f"visual_encoder.vision_model.encoder.layers.{config.vision.used_layers}"
    official[f"{unused_layer}.layer_norm1.weight"] = torch.ones(hidden)
    official["visual_encoder.vision_model.head.probe"] = torch.zeros(1, 1, hidden)
    official["segmentor.encoder.neck.conv1.weight"] = torch.zeros(8, config.mask_encoder.hidden_size, 1, 1)
    official["segmentor.shared_image_embedding.positional_embedding"] = torch.zeros(2, 4)
    return official


def test_official_key_names_cover_the_release_layout() -> None:
    model, _ = tiny_model_and_tokenizer()
    official = to_official_state_dict(model.state_dict())
    prefixes = {key.split(".")[0] for key in official}
    assert prefixes == {
        "visual_encoder", "visual_projector", "segmentor", "seg_projector", "seg_connector", "llm", "llm_projector",
        "bg_embeds",
    }
    assert "segmentor.logit_scale" in official
    assert any(k.startswith("segmentor.decoder.decoder.mask_predictor.mask_embedder.0.0") for k in official)
    assert any(k.startswith("seg_connector.model.0.model.0.weight") for k in official)
    assert any(k.startswith("llm.model.layers.0.self_attn.qkv_proj") for k in official)
    assert "visual_projector.model.0.weight" in official and "llm.lm_head.weight" in official


def test_release_layout_checkpoint_loads_and_gives_identical_outputs(tmp_path) -> None:
    model, tokenizer = tiny_model_and_tokenizer(seed=3)
    path = tmp_path / "pytorch_model.bin"
    torch.save(_official_checkpoint(model), path)
    base_tokenizer = build_tokenizer()  # without <SEG>/<p>/</p>: the loader adds them as the official code does
    base_tokenizer.save_pretrained(tmp_path / "tokenizer")
    loaded, loaded_tokenizer, report = load_official(path, tmp_path / "tokenizer", config=model.config)
    assert report.missing == [] and report.unexpected == []
    assert len(report.unused) == 4
    image = scene_image(seed=2)
    _assert_same_results(_run(model, tokenizer, image), _run(loaded, loaded_tokenizer, image))


def test_main_branch_names_are_accepted_too() -> None:
    model, _ = tiny_model_and_tokenizer()
    official = to_official_state_dict(model.state_dict())
    renamed = {
        key.replace("visual_encoder.", "vision_encoder.").replace("segmentor.logit_scale", "segmentor.class_predictor.logit_scale"): value
        for key, value in official.items()
    }
    converted, unused, unmapped = convert_official_state_dict(renamed, model.config)
    assert unmapped == [] and unused == []
    assert set(converted) == set(model.state_dict())


def test_shape_mismatch_is_refused_with_both_shapes(tmp_path) -> None:
    model, _ = tiny_model_and_tokenizer()
    state = model.state_dict()
    state["seg_decoder.background_embedding.weight"] = torch.zeros(1, 7)
    with pytest.raises(ValueError, match=r"background_embedding.weight: checkpoint \(1, 7\) vs model \(1, 32\)"):
        load_into(XSamModel(model.config), state)


def test_missing_and_unknown_keys_are_refused_or_reported(tmp_path) -> None:
    model, tokenizer = tiny_model_and_tokenizer()
    official = to_official_state_dict(model.state_dict())
    del official["bg_embeds.weight"]
    official["some_other_model.weight"] = torch.zeros(1)
    path = tmp_path / "model.safetensors"
    from safetensors.torch import save_file

    save_file(official, str(path))
    build_tokenizer().save_pretrained(tmp_path / "tok")
    with pytest.raises(ValueError, match="some_other_model.weight"):
        load_official(path, tmp_path / "tok", config=model.config)
    _, _, report = load_official(path, tmp_path / "tok", config=model.config, strict=False)
    assert report.missing == ["seg_decoder.background_embedding.weight"]
    assert report.unexpected == ["some_other_model.weight"]


def test_tokenizer_of_the_wrong_size_is_refused(tmp_path) -> None:
    model, _ = tiny_model_and_tokenizer()
    config = XSamConfig.tiny(vocab_size=model.config.language.vocab_size + 5)
    torch.save(to_official_state_dict(model.state_dict()), tmp_path / "pytorch_model.bin")
    build_tokenizer().save_pretrained(tmp_path / "tok")
    with pytest.raises(ValueError, match="tokens"):
        load_official(tmp_path / "pytorch_model.bin", tmp_path / "tok", config=config)


def test_only_weights_are_read_never_code(tmp_path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.bin"
    torch.save({"x": Payload()}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        read_state_dict(path)
    with pytest.raises(ValueError, match="Unsupported"):
        (tmp_path / "model.pkl").write_bytes(b"")
        read_state_dict(tmp_path / "model.pkl")


def test_own_format_round_trip(tmp_path) -> None:
    model, tokenizer = tiny_model_and_tokenizer(seed=4)
    save_pretrained(model, tokenizer, tmp_path / "m", metadata={"note": "test"})
    loaded, loaded_tokenizer = load_pretrained(tmp_path / "m")
    assert loaded.config == model.config
    image = scene_image(seed=7)
    _assert_same_results(_run(model, tokenizer, image), _run(loaded, loaded_tokenizer, image))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_pretrained(tmp_path / "missing")


def test_convert_command_writes_a_loadable_model(tmp_path) -> None:
    from xsam_engine.convert import main as convert

    model, tokenizer = tiny_model_and_tokenizer(seed=5)
    torch.save(_official_checkpoint(model), tmp_path / "pytorch_model.bin")
    build_tokenizer().save_pretrained(tmp_path / "tok")
    common = ["--checkpoint", str(tmp_path / "pytorch_model.bin"), "--tokenizer", str(tmp_path / "tok"), "--dtype", "float32"]
    # Without --config the converter uses the released configuration; a tiny checkpoint must be
    # refused with the shape report, not loaded half-way.
    with pytest.raises(ValueError, match="does not fit|tokens"):
        convert([*common, "--out", str(tmp_path / "released")])
    assert not (tmp_path / "released").exists()
    # With the checkpoint's own configuration it converts; the result runs exactly like the original.
    model.config.save(tmp_path / "tiny.json")
    assert convert([*common, "--config", str(tmp_path / "tiny.json"), "--out", str(tmp_path / "out")]) == 0
    loaded, loaded_tokenizer = load_pretrained(tmp_path / "out")
    assert loaded.config == model.config
    image = scene_image(seed=8)
    _assert_same_results(_run(model, tokenizer, image), _run(loaded, loaded_tokenizer, image))
    # A saved model's config.json (the XSamConfig wrapped with format_version / metadata) is accepted too.
    assert convert([*common, "--config", str(tmp_path / "out" / "config.json"), "--out", str(tmp_path / "again")]) == 0
    assert load_pretrained(tmp_path / "again")[0].config == model.config


def test_convert_config_option_refuses_bad_files_with_the_fix(tmp_path) -> None:
    from xsam_engine.convert import read_config

    with pytest.raises(FileNotFoundError, match="XSamConfig.save"):
        read_config(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        read_config(tmp_path / "broken.json")
    (tmp_path / "unknown.json").write_text('{"language": {"add_eos": true}}')
    with pytest.raises(ValueError, match="add_eos"):
        read_config(tmp_path / "unknown.json")


def test_configurations_default_to_the_bos_form_x_sam_was_trained_with(tmp_path) -> None:
    """Official `encode_fn(..., next_needs_bos_token=True)` (encode.py) is how the released weights were
    trained and evaluated, so the released configuration prepends BOS; a configuration file that does not
    mention `add_bos` gets the same default; the shipped tabletop model states its own form (trained without)."""
    import json

    from xsam_engine.checkpoint import CONFIG_NAME, DEFAULT_MODEL_DIR
    from xsam_engine.convert import read_config

    assert XSamConfig.released().language.add_bos is True
    (tmp_path / "no_bos_field.json").write_text('{"language": {"vocab_size": 300}}')
    assert read_config(tmp_path / "no_bos_field.json").language.add_bos is True
    shipped = json.loads((DEFAULT_MODEL_DIR / CONFIG_NAME).read_text())
    assert shipped["config"]["language"]["add_bos"] is False
