"""Backend selection (auto | tensorrt | onnxruntime | torch x auto | cuda | cpu) and its one log line."""

from __future__ import annotations

import logging

import pytest
import torch

from engine_fixtures import scene_image, tiny_model_and_tokenizer

from xsam_engine.backends import (
    BackendInfo,
    Environment,
    OnnxRuntimeStages,
    create_predictor,
    model_fingerprint,
    resolve_backend,
)
from xsam_engine.predictor import XSamPredictor
from xsam_engine.requests import SegmentationRequest, Task

CPU_ONLY = Environment(cuda_available=False, tensorrt_available=False, onnxruntime_providers=("CPUExecutionProvider",))
NO_ORT = Environment(cuda_available=False, tensorrt_available=False, onnxruntime_providers=())
GPU_TRT = Environment(cuda_available=True, tensorrt_available=True, onnxruntime_providers=("CPUExecutionProvider",))
GPU_ORT = Environment(cuda_available=True, tensorrt_available=False, onnxruntime_providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
GPU_BARE = Environment(cuda_available=True, tensorrt_available=False, onnxruntime_providers=("CPUExecutionProvider",))


@pytest.mark.parametrize("backend,device,env,expected", [
    ("auto", "auto", CPU_ONLY, ("torch", "cpu", False)),
    ("auto", "auto", GPU_TRT, ("tensorrt", "cuda", False)),
    ("auto", "auto", GPU_ORT, ("onnxruntime", "cuda", False)),
    ("auto", "auto", GPU_BARE, ("torch", "cuda", False)),
    ("auto", "cuda", CPU_ONLY, ("torch", "cpu", True)),
    ("tensorrt", "auto", CPU_ONLY, ("onnxruntime", "cpu", True)),
    ("tensorrt", "auto", NO_ORT, ("torch", "cpu", True)),
    ("tensorrt", "cuda", GPU_TRT, ("tensorrt", "cuda", False)),
    ("tensorrt", "cpu", GPU_TRT, ("onnxruntime", "cpu", True)),
    ("tensorrt", "auto", GPU_BARE, ("torch", "cuda", True)),
    ("tensorrt", "auto", GPU_ORT, ("onnxruntime", "cuda", True)),
    ("onnxruntime", "cpu", CPU_ONLY, ("onnxruntime", "cpu", False)),
    ("onnxruntime", "cuda", GPU_BARE, ("torch", "cuda", True)),
    ("onnxruntime", "auto", NO_ORT, ("torch", "cpu", True)),
    ("torch", "auto", GPU_TRT, ("torch", "cuda", False)),
    ("torch", "cuda", CPU_ONLY, ("torch", "cpu", True)),
])
def test_resolution(backend, device, env, expected):
    resolution = resolve_backend(backend, device, env)
    assert (resolution.backend, resolution.device, resolution.fallback) == expected
    if resolution.fallback:
        assert resolution.reason  # a fallback always says why


def test_tensorrt_reason_names_the_missing_pieces():
    reason = resolve_backend("tensorrt", "auto", CPU_ONLY).reason
    assert "tensorrt Python package is not installed" in reason and "CUDA" in reason


def test_unknown_choices_are_rejected():
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("openvino", "auto", CPU_ONLY)
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_backend("auto", "tpu", CPU_ONLY)


def _backend_records(caplog):
    return [r for r in caplog.records if r.name == "xsam_engine.backends"]


def test_asking_for_tensorrt_here_falls_back_with_exactly_one_line(tmp_path, caplog):
    model, tokenizer = tiny_model_and_tokenizer()
    with caplog.at_level(logging.DEBUG, logger="xsam_engine"):
        predictor, info = create_predictor(backend="tensorrt", model=model, tokenizer=tokenizer, engine_cache_dir=tmp_path)
    records = _backend_records(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]
    message = records[0].getMessage()
    assert records[0].levelno == logging.WARNING
    expected_backend = "onnxruntime"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        expected_backend = "torch"
    assert "asked for backend=tensorrt" in message and f"using {expected_backend} on cpu" in message
    assert "tensorrt" in message and "not installed" in message
    assert isinstance(info, BackendInfo) and info.fallback and info.backend == expected_backend
    if expected_backend == "onnxruntime":
        assert isinstance(predictor.stages, OnnxRuntimeStages)
        assert (tmp_path / "onnx" / model_fingerprint(model)[:16] / "manifest.json").is_file()
    image = scene_image()
    predictor.set_image(image)
    result = predictor.segment(SegmentationRequest(task=Task.REFERRING, text="red cup"))
    assert result.image_size == image.shape[:2]


def test_auto_on_cpu_uses_torch_with_one_info_line(caplog):
    model, tokenizer = tiny_model_and_tokenizer()
    with caplog.at_level(logging.DEBUG, logger="xsam_engine"):
        predictor, info = create_predictor(model=model, tokenizer=tokenizer, environment=CPU_ONLY)
    records = _backend_records(caplog)
    assert len(records) == 1 and records[0].levelno == logging.INFO
    assert info.backend == "torch" and not info.fallback and predictor.stages is predictor.model
    assert info.summary() == "image stages: torch on cpu; LLM: torch float32 on cpu"


def test_onnx_export_is_reused(tmp_path):
    model, tokenizer = tiny_model_and_tokenizer()
    _, first = create_predictor(backend="onnxruntime", device="cpu", model=model, tokenizer=tokenizer, engine_cache_dir=tmp_path)
    manifest = tmp_path / "onnx" / model_fingerprint(model)[:16] / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    _, second = create_predictor(backend="onnxruntime", device="cpu", model=model, tokenizer=tokenizer, engine_cache_dir=tmp_path)
    assert first.onnx_dir == second.onnx_dir and manifest.stat().st_mtime_ns == stamp


def test_fingerprint_follows_the_image_stage_weights():
    model, _ = tiny_model_and_tokenizer()
    before = model_fingerprint(model)
    with torch.no_grad():
        model.language_model.condition_projector.model[0].bias.add_(1.0)  # LLM side: not exported
    assert model_fingerprint(model) == before
    with torch.no_grad():
        model.seg_decoder.logit_scale.add_(0.1)
    assert model_fingerprint(model) != before


def test_cli_accepts_backend_and_device():
    from xsam_engine.cli import build_parser

    args = build_parser().parse_args(["segment", "image.png", "red cup", "--backend", "tensorrt", "--device", "cuda"])
    assert (args.backend, args.device) == ("tensorrt", "cuda")
    defaults = build_parser().parse_args(["segment", "image.png"])
    assert (defaults.backend, defaults.device) == ("auto", "auto")


@pytest.mark.parametrize("options, expected", [
    (["--backend", "triton", "--triton-url", "grpc://127.0.0.1:8001"], "triton_url must be 'host:port' without a scheme"),
    (["--backend", "triton", "--triton-url", "127.0.0.1"], "triton_url must end in ':port'"),
    (["--model", "{tmp}/no_such_model"], "is not an xsam model directory"),
    (["--model", "{tmp}/image.png"], "{tmp}/image.png"),
])
def test_cli_refuses_a_bad_server_address_or_model_with_a_clear_error(tmp_path, capsys, options, expected):
    """xsam segment with a --triton-url it cannot use, or a --model that is not a model directory:
    exit status 2 and "error: <why>" on stderr (as for an unreachable server), not a traceback; the
    address is refused before any connection (docs/fleet.md), so no server is needed here."""
    import cv2

    from xsam_engine.cli import main

    image = tmp_path / "image.png"
    cv2.imwrite(str(image), scene_image()[..., ::-1])
    options = [option.format(tmp=tmp_path) for option in options]
    assert main(["segment", str(image), "red cup", "--device", "cpu", *options]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and expected.format(tmp=tmp_path) in error, error


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_reduced_precision_llm_with_any_backend(tmp_path, backend):
    # The GPU path runs the LLM in bf16/fp16 while the engines hand float tensors back: the same
    # dtype boundary is exercised here on the CPU with bf16.
    model, tokenizer = tiny_model_and_tokenizer()
    predictor, info = create_predictor(backend=backend, device="cpu", dtype=torch.bfloat16, model=model,
                                       tokenizer=tokenizer, engine_cache_dir=tmp_path)
    assert info.dtype == "bfloat16" and predictor.model.dtype == torch.bfloat16
    predictor.set_image(scene_image())
    result = predictor.segment(SegmentationRequest(task=Task.INSTANCE, vocabulary=("cup", "bowl"), score_threshold=0.0))
    assert result.condition.condition_embeds.dtype == torch.bfloat16
    tracked = predictor.decode(result.condition)
    assert tracked.image_size == result.image_size


def test_callers_with_their_own_logger_can_take_over_the_line(caplog):
    model, tokenizer = tiny_model_and_tokenizer()
    with caplog.at_level(logging.DEBUG, logger="xsam_engine"):
        _, info = create_predictor(backend="torch", device="cuda", model=model, tokenizer=tokenizer,
                                   environment=CPU_ONLY, log=False)
    assert _backend_records(caplog) == []
    assert info.fallback and "no CUDA device" in info.reason


def test_model_loaded_by_the_factory_drops_its_pytorch_encoders(tmp_path):
    from xsam_engine.checkpoint import save_pretrained

    model, tokenizer = tiny_model_and_tokenizer()
    directory = save_pretrained(model, tokenizer, tmp_path / "model")
    predictor, info = create_predictor(directory, backend="onnxruntime", device="cpu", engine_cache_dir=tmp_path / "cache")
    assert info.backend == "onnxruntime"
    assert all(p.device.type == "meta" for p in predictor.model.mask_encoder.parameters())
    assert all(p.device.type == "cpu" for p in predictor.model.language_model.parameters())
    image = scene_image()
    predictor.set_image(image)
    reference = XSamPredictor(model, tokenizer)
    reference.set_image(image)
    request = SegmentationRequest(task=Task.REFERRING, text="red cup")
    got, expected = predictor.segment(request), reference.segment(request)
    assert [i.box_xyxy for i in got.instances] == [i.box_xyxy for i in expected.instances]


def test_a_backend_that_raises_is_logged_with_its_traceback_and_one_summary_line(tmp_path, caplog):
    """engine_cache_dir names a file, so exporting the ONNX graphs for ONNX Runtime raises while the
    backend starts: the fallback to torch keeps its one summary line, and a WARNING record carries
    the traceback (where it was raised), not only the one-line reason."""
    pytest.importorskip("onnxruntime")
    not_a_directory = tmp_path / "engine_cache"
    not_a_directory.write_text("a file where the engine cache directory should be")
    model, tokenizer = tiny_model_and_tokenizer()
    with caplog.at_level(logging.DEBUG, logger="xsam_engine"):
        predictor, info = create_predictor(backend="onnxruntime", device="cpu", model=model, tokenizer=tokenizer,
                                           engine_cache_dir=not_a_directory)
    records = _backend_records(caplog)
    summaries = [r for r in records if r.getMessage().startswith("Backend: asked for backend=onnxruntime")]
    assert len(summaries) == 1 and summaries[0].levelno == logging.WARNING
    assert "using torch on cpu" in summaries[0].getMessage()
    assert "onnxruntime failed to start (NotADirectoryError" in summaries[0].getMessage()
    (traceback_record,) = [r for r in records if r.exc_info]
    assert traceback_record.levelno == logging.WARNING and traceback_record.exc_info[0] is NotADirectoryError
    assert traceback_record.getMessage() == "The onnxruntime backend raised while starting; falling back."
    assert "Traceback (most recent call last)" in caplog.text and "in ensure_onnx" in caplog.text
    assert info.backend == "torch" and info.fallback and predictor.stages is predictor.model


def test_the_traceback_is_logged_even_when_the_caller_logs_the_summary(tmp_path, caplog):
    """log=False (the node) hands the summary to the caller, not the traceback."""
    not_a_directory = tmp_path / "engine_cache"
    not_a_directory.write_text("")
    model, tokenizer = tiny_model_and_tokenizer()
    with caplog.at_level(logging.DEBUG, logger="xsam_engine"):
        _, info = create_predictor(backend="onnxruntime", device="cpu", model=model, tokenizer=tokenizer,
                                   engine_cache_dir=not_a_directory, environment=CPU_ONLY, log=False)
    records = _backend_records(caplog)
    assert len(records) == 1 and records[0].exc_info and records[0].levelno == logging.WARNING
    assert info.backend == "torch" and "NotADirectoryError" in info.reason


def test_create_predictor_returns_a_named_result_and_shares_the_defaults_of_from_pretrained() -> None:
    import inspect

    from xsam_engine.backends import DEFAULT_DEVICE, DEFAULT_SEED, CreatedPredictor, create_predictor

    model, tokenizer = tiny_model_and_tokenizer()
    created = create_predictor(backend="torch", model=model, tokenizer=tokenizer, environment=CPU_ONLY)
    assert isinstance(created, CreatedPredictor) and isinstance(created.predictor, XSamPredictor)
    assert created.info.backend == "torch" and created.info.device == "cpu"
    factory, loader = inspect.signature(create_predictor).parameters, inspect.signature(XSamPredictor.from_pretrained).parameters
    assert factory["device"].default == loader["device"].default == DEFAULT_DEVICE
    assert factory["seed"].default == loader["seed"].default == DEFAULT_SEED
    assert factory["dtype"].default is loader["dtype"].default is None
