"""Build, cache and run a real TensorRT engine from the tiny model's graphs (needs TensorRT + a GPU).

Skipped visibly where TensorRT is not installed (PyPI's tensorrt-cu12-libs cannot be installed
on this CI machine, and there is no GPU): nothing here fakes TensorRT.
"""

from __future__ import annotations

import pytest
import torch

trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (needs an NVIDIA GPU machine, e.g. JetPack 6)")
if not torch.cuda.is_available():
    pytest.skip("TensorRT is installed but no CUDA GPU is available", allow_module_level=True)

from engine_fixtures import tiny_model_and_tokenizer  # noqa: E402

from xsam_engine.export import export_onnx, graph_specs  # noqa: E402
from xsam_engine.export.graphs import build_graph, example_inputs  # noqa: E402
from xsam_engine.tensorrt import EngineOptions, get_engine  # noqa: E402
from xsam_engine.tensorrt.runner import TensorRTRunner  # noqa: E402


@pytest.mark.parametrize("enable_fp16", [False, True])
def test_engine_builds_caches_and_matches_pytorch(tmp_path, enable_fp16):
    model, _ = tiny_model_and_tokenizer()
    paths = export_onnx(model, tmp_path / "onnx", graphs=("mask_decoder",))
    spec = graph_specs(model.config)["mask_decoder"]
    options = EngineOptions(engine_cache_dir=tmp_path / "engines", enable_fp16=enable_fp16, max_conditions=16)
    path, key, cache = get_engine(paths["mask_decoder"], spec, options, model.config.sampler_num_points)
    assert cache.lookup(key).hit and (tmp_path / "engines" / "timing.cache").is_file()
    again, _, _ = get_engine(paths["mask_decoder"], spec, options, model.config.sampler_num_points)
    assert again == path and again.stat().st_mtime == path.stat().st_mtime  # cached, not rebuilt
    runner = TensorRTRunner(path, dict(key.profile))
    for conditions in (1, 7):
        inputs = example_inputs(spec, {"num_conditions": conditions})
        outputs = runner(**{k: v.cuda() for k, v in inputs.items()})
        with torch.no_grad():
            expected = build_graph("mask_decoder", model)(*(inputs[n] for n in spec.input_names))
        tolerance = 5e-2 if enable_fp16 else 1e-3
        torch.testing.assert_close(outputs["class_logits"].float().cpu(), expected[0], atol=tolerance, rtol=tolerance)
        torch.testing.assert_close(outputs["mask_logits"].float().cpu(), expected[1], atol=tolerance, rtol=tolerance)


def test_corrupt_engine_is_rebuilt(tmp_path):
    model, _ = tiny_model_and_tokenizer()
    paths = export_onnx(model, tmp_path / "onnx", graphs=("region_encoder",))
    spec = graph_specs(model.config)["region_encoder"]
    options = EngineOptions(engine_cache_dir=tmp_path / "engines")
    path, key, cache = get_engine(paths["region_encoder"], spec, options, model.config.sampler_num_points)
    path.write_bytes(path.read_bytes()[:100])
    rebuilt, _, _ = get_engine(paths["region_encoder"], spec, options, model.config.sampler_num_points)
    assert cache.lookup(key).hit and rebuilt.stat().st_size > 100
