"""Engine cache keys and invalidation, optimisation profiles, calibration data: all without TensorRT.

The builder/runner themselves need TensorRT and a GPU and are tested in test_tensorrt_engine.py
(skipped visibly here). Nothing in this file imports or imitates `tensorrt`.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from engine_fixtures import tiny_model_and_tokenizer

from xsam_engine.configuration_xsam import XSamConfig
from xsam_engine.export.graphs import graph_specs
from xsam_engine.tensorrt import EngineCache, EngineCacheKey, EngineOptions, GpuInfo, engine_key, precision_name
from xsam_engine.tensorrt.calibration import CALIBRATED_GRAPHS, calibration_batches, calibration_fingerprint, calibration_id
from xsam_engine.tensorrt.profiles import DynamicRange, check_shape_in_profile, default_ranges, profile_shapes

ORIN = GpuInfo(name="Orin (nvgpu)", compute_capability="8.7")
H100 = GpuInfo(name="NVIDIA H100 80GB HBM3", compute_capability="9.0")


@pytest.fixture
def onnx_file(tmp_path):
    path = tmp_path / "mask_decoder.onnx"
    path.write_bytes(b"graph-v1")
    (tmp_path / "mask_decoder.onnx.data").write_bytes(b"weights-v1")
    return path


def key_for(onnx_file, options=None, gpu=ORIN, version="10.3.0", num_points=32):
    spec = graph_specs(XSamConfig.tiny())["mask_decoder"]
    return engine_key(onnx_file, spec, options or EngineOptions(), gpu, version, num_points)[0]


def test_key_is_stable_and_names_the_file(onnx_file):
    first, second = key_for(onnx_file), key_for(onnx_file)
    assert first == second and first.digest() == second.digest()
    name = first.file_name()
    assert name.startswith("mask_decoder.fp16.sm87.orin-nvgpu.") and name.endswith(".engine")
    assert EngineCacheKey.from_json(json.loads(json.dumps(first.to_json()))) == first


@pytest.mark.parametrize("change", ["onnx", "external_data", "version", "gpu", "precision", "shapes", "calibration"])
def test_any_input_of_the_engine_changes_the_key(onnx_file, change):
    before = key_for(onnx_file, EngineOptions(enable_int8=True, calibration_id="a"))
    options, gpu, version = EngineOptions(enable_int8=True, calibration_id="a"), ORIN, "10.3.0"
    if change == "onnx":
        onnx_file.write_bytes(b"graph-v2")
    elif change == "external_data":
        onnx_file.with_name("mask_decoder.onnx.data").write_bytes(b"weights-v2")
    elif change == "version":
        version = "8.6.2"
    elif change == "gpu":
        gpu = H100
    elif change == "precision":
        options = EngineOptions(enable_int8=False)
    elif change == "shapes":
        options = EngineOptions(enable_int8=True, calibration_id="a", max_conditions=64)
    elif change == "calibration":
        options = EngineOptions(enable_int8=True, calibration_id="b")
    after = key_for(onnx_file, options, gpu, version)
    assert after != before and after.digest() != before.digest()


def test_store_then_lookup_hits(tmp_path, onnx_file):
    cache = EngineCache(tmp_path / "engines")
    key = key_for(onnx_file)
    assert not cache.lookup(key).hit
    path = cache.store(key, b"serialized-engine", build_seconds=1.5)
    found = cache.lookup(key)
    assert found.hit and found.path == path and path.read_bytes() == b"serialized-engine"
    assert json.loads(cache.sidecar(path).read_text())["build_seconds"] == 1.5


@pytest.mark.parametrize("field_name,value,reason", [
    ("onnx_sha256", "0" * 64, "onnx_sha256"),
    ("tensorrt_version", "10.4.0", "tensorrt_version"),
    ("gpu_name", "NVIDIA H100 80GB HBM3", "gpu_name"),
    ("compute_capability", "9.0", "compute_capability"),
    ("precision", "fp32", "precision"),
])
def test_engine_file_path_with_a_stale_key_is_rebuilt(tmp_path, onnx_file, field_name, value, reason):
    # One fixed engine_file_path (Isaac ROS style): the file is there but was built for something else.
    cache = EngineCache(engine_file_path=tmp_path / "xsam.engine")
    old_key = key_for(onnx_file)
    cache.store(old_key, b"old")
    wanted = dataclasses.replace(old_key, **{field_name: value})
    found = cache.lookup(wanted)
    assert not found.hit and reason in found.reason
    assert found.path == tmp_path / "xsam.engine"


def test_profile_change_is_detected(tmp_path, onnx_file):
    cache = EngineCache(engine_file_path=tmp_path / "xsam.engine")
    cache.store(key_for(onnx_file), b"old")
    found = cache.lookup(key_for(onnx_file, EngineOptions(max_conditions=16)))
    assert not found.hit and "profile" in found.reason


@pytest.mark.parametrize("damage", ["truncate", "flip", "sidecar", "missing_sidecar"])
def test_corrupt_engine_is_not_used(tmp_path, onnx_file, damage):
    cache = EngineCache(tmp_path)
    key = key_for(onnx_file)
    path = cache.store(key, b"0123456789" * 100)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:500])
    elif damage == "flip":
        data = bytearray(path.read_bytes())
        data[10] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "sidecar":
        cache.sidecar(path).write_text("{not json")
    else:
        cache.sidecar(path).unlink()
    found = cache.lookup(key)
    assert not found.hit, found
    assert found.reason


def test_force_update_and_invalidate(tmp_path, onnx_file):
    cache = EngineCache(tmp_path)
    key = key_for(onnx_file)
    path = cache.store(key, b"engine")
    assert cache.lookup(key, force_update=True).reason == "force_engine_update is set"
    cache.invalidate(key, "deserialisation failed")  # what the runner reports for an unloadable engine
    assert not path.exists() and not cache.sidecar(path).exists()
    assert not cache.lookup(key).hit


def test_timing_cache_is_persisted_next_to_the_engines(tmp_path):
    assert EngineCache(tmp_path).timing_cache_path == tmp_path / "timing.cache"
    assert EngineCache(engine_file_path=tmp_path / "a" / "x.engine").timing_cache_path == tmp_path / "a" / "timing.cache"


def test_precision_names():
    assert precision_name(False) == "fp32"
    assert precision_name(True) == "fp16"
    assert precision_name(True, enable_int8=True) == "int8"
    assert precision_name(True, enable_fp8=True) == "fp8"
    with pytest.raises(ValueError, match="precision"):
        EngineCacheKey("g", "h", "10", "gpu", "8.7", "int4")


def test_profiles_cover_only_the_dynamic_inputs():
    config = XSamConfig.released()
    specs = graph_specs(config)
    ranges = default_ranges(config.sampler_num_points, max_conditions=256, opt_conditions=8)
    decoder = profile_shapes(specs["mask_decoder"], ranges)
    assert decoder == {"condition_embeds": ((1, 1, 256), (1, 8, 256), (1, 256, 256))}
    regions = profile_shapes(specs["region_encoder"], ranges)
    assert regions == {"points": ((1, 1, 2), (1, 256, 2), (1, 256, 2))}
    for static in ("mask_encoder", "vision_encoder", "pixel_decoder"):
        assert profile_shapes(specs[static], ranges) == {}
    with pytest.raises(ValueError):
        DynamicRange(4, 2, 8)


def test_shapes_outside_the_profile_are_refused_with_the_fix():
    shapes = {"condition_embeds": ((1, 1, 32), (1, 8, 32), (1, 16, 32))}
    check_shape_in_profile("condition_embeds", (1, 16, 32), shapes)
    check_shape_in_profile("mask_features", (1, 32, 16, 16), shapes)  # static inputs have no profile
    with pytest.raises(ValueError, match="max_conditions"):
        check_shape_in_profile("condition_embeds", (1, 17, 32), shapes)


def test_engine_key_profile_uses_the_graph_specs(onnx_file):
    key = key_for(onnx_file, EngineOptions(max_conditions=32, opt_conditions=4))
    assert dict(key.profile) == {"condition_embeds": ((1, 1, 32), (1, 4, 32), (1, 32, 32))}


def test_released_specs_are_what_the_engines_consume():
    specs = graph_specs(XSamConfig.released())
    assert specs["mask_encoder"].inputs[0].shape == (1, 3, 1024, 1024)
    assert [o.shape for o in specs["mask_encoder"].outputs] == [
        (1, 1024, 3072), (1, 512, 128, 128), (1, 1024, 64, 64), (1, 2048, 32, 32)]
    assert specs["vision_encoder"].outputs[0].shape == (1, 729, 3072)
    assert [o.shape for o in specs["pixel_decoder"].outputs] == [
        (1, 256, 128, 128), (1, 256, 32, 32), (1, 256, 64, 64), (1, 256, 128, 128)]
    assert specs["mask_decoder"].outputs[1].shape == (1, 200, 128, 128)
    assert specs["mask_decoder"].dynamic_axes == {"condition_embeds": {1: "num_conditions"}, "class_logits": {2: "num_classes"}}


@pytest.mark.parametrize("graph", CALIBRATED_GRAPHS)
def test_calibration_batches_are_the_graph_inputs(graph):
    model, _ = tiny_model_and_tokenizer()
    spec = graph_specs(model.config)[graph]
    batches = list(calibration_batches(model, graph, num_scenes=2, width=96, height=80))
    assert len(batches) == 2
    for batch in batches:
        assert set(batch) == set(spec.input_names)
        for tensor in spec.inputs:
            shape = tensor.concrete_shape({"num_conditions": batch[tensor.name].shape[1] if tensor.dynamic_axes else 0})
            assert tuple(batch[tensor.name].shape) == shape and batch[tensor.name].dtype == torch.float32
    again = calibration_fingerprint(calibration_batches(model, graph, num_scenes=2, width=96, height=80))
    assert again == calibration_fingerprint(batches)  # deterministic from the seed
    assert calibration_id(2, 0, 96, 80) == "tabletop-n2-s0-96x80"
