"""Pure helpers of the benchmarks (bench/common.py): no GPU, no timing. bench/gpu_all.py: test_bench_gpu_all.py."""

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


def test_no_benchmark_shadows_a_module_the_stack_imports():
    # `python bench/x.py` puts bench/ first on sys.path, so bench/<name>.py wins over an installed
    # module of that name: a bench/triton.py made torch take it for the Triton compiler and broke
    # torch._dynamo (and so bench/gpu_all.py's torch.compile sections).
    optional = {"triton", "tensorrt", "torch", "onnx", "onnxruntime", "onnxscript", "transformers", "numpy",
                "tritonclient", "pytriton", "matplotlib", "cv2", "scipy", "safetensors", "tokenizers", "rclpy"}
    names = {path.stem for path in BENCH.glob("*.py")}
    assert not names & (optional | set(sys.stdlib_module_names)), names & (optional | set(sys.stdlib_module_names))
