"""Pure helpers of the benchmarks (bench/common.py, bench/gpu_all.py): no GPU, no timing."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name: str):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


common = _load("common")
gpu_all = _load("gpu_all")  # importing must not touch a GPU or start measuring


def test_percentiles_and_latency_stats():
    assert common.percentile([3.0], 95) == 3.0
    assert common.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert common.percentile(list(range(101)), 95) == 95
    stats = common.latency_stats([0.010, 0.020, 0.030])
    assert stats["p50_ms"] == 20.0 and stats["runs"] == 3 and stats["throughput_per_s"] == 50.0
    with pytest.raises(ValueError):
        common.percentile([], 50)


def test_roofline_bound_and_multiple():
    # 2.99 TFLOP of SAM ViT-L on an AGX Orin (42.6 TFLOP/s): 70 ms (perf-anchors section 5).
    assert common.roofline_ms(2.99e12, 42.6e12) == pytest.approx(70.2, abs=0.1)
    # Memory-bound case: decode reads 8.15 GB at 3.35 TB/s -> 2.43 ms.
    assert common.roofline_ms(8.2e9, 989.4e12, 8.15e9, 3.35e12) == pytest.approx(2.43, abs=0.01)
    assert common.roofline_multiple(140.0, 70.0) == 2.0
    assert common.roofline_multiple(5.0, None) is None


def test_markdown_table():
    table = common.format_table([{"a": 1.23456, "b": None}], [("A", "a"), ("B", "b")])
    assert table.splitlines() == ["| A | B |", "|---|---|", "| 1.23 | - |"]


def test_gpu_all_arguments():
    args = gpu_all.parse_args([])
    assert (args.dtype, args.repeats, args.budget_s, args.skip_tensorrt) == ("bfloat16", 20, 540.0, False)
    args = gpu_all.parse_args(["--dtype", "float16", "--repeats", "5", "--skip-tensorrt", "--budget-s", "300"])
    assert (args.dtype, args.repeats, args.skip_tensorrt, args.budget_s) == ("float16", 5, True, 300.0)
    with pytest.raises(SystemExit):
        gpu_all.parse_args(["--repeats", "0"])


def test_gpu_names_become_file_names():
    assert gpu_all.gpu_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert gpu_all.gpu_slug("Orin (nvgpu)") == "orin-nvgpu"
    assert gpu_all.device_peaks("NVIDIA H100 80GB HBM3")["fp16_tflops"] == 989.4
    assert gpu_all.device_peaks("NVIDIA GeForce RTX 4090") is None


def test_targets_and_roofline_multiples():
    metrics = {"sam_encoder_ms": 5.0, "decode_ms_per_token": 4.86, "tracking_fps": 120.0, "command_to_masks_ms": None}
    rows = {row["metric"]: row for row in gpu_all.evaluate_targets(metrics, 989.4, 3350.0)}
    sam = rows["sam_encoder_ms"]
    assert sam["meets_target"] is True and sam["meets_goal"] is False  # <= 6 ms issue target, > 3.5 ms stretch
    assert sam["roofline_ms"] == pytest.approx(3.154, abs=0.001) and sam["x_roofline"] == pytest.approx(1.585, abs=0.01)
    assert rows["decode_ms_per_token"]["meets_target"] is False  # 4.86 ms > 3.5 ms
    decode = rows["decode_ms_per_token"]
    assert decode["roofline_ms"] == pytest.approx(2.433, abs=0.001) and decode["x_roofline"] == pytest.approx(2.0, abs=0.01)
    tracking = rows["tracking_fps"]
    assert tracking["meets_target"] is True and tracking["meets_goal"] is False  # >= 100 fps, < 200 fps
    assert rows["command_to_masks_ms"]["meets_target"] is None and rows["command_to_masks_ms"]["x_roofline"] is None
    text = gpu_all.format_rows(list(rows.values()))
    assert "sam_encoder_ms" in text and "NO" in text and "yes" in text


def test_budget():
    budget = gpu_all.Budget(seconds=100.0)
    assert budget.allows(10.0)
    assert not budget.allows(1000.0)
