"""Per-stage latency (p50, p95), throughput and peak memory per backend, with roofline multiples.

Backends measured here: PyTorch (CPU) and ONNX Runtime (CPU EP) running the same exported
graphs; TensorRT / CUDA rows are listed as "not measured: no GPU in this environment" (see
bench/gpu_all.py for the GPU run). Configurations: `tiny` and `released` (full-size, random
weights). Each (configuration, backend) runs in its own subprocess so its peak RSS is its own.

Also measured, per backend:
* tracking: one new frame with a cached condition (`set_image` + `decode`) vs the sum of the
  stages it needs (mask encoder + pixel decoder + decoder); target <= 1.1x;
* command -> masks (referring; image already set), and the LLM prefill (PyTorch, same for all
  backends; for `released` measured on a 2-layer cut at the full width and full ~1,800-token
  prompt, then scaled x16 to Phi-3's 32 layers — labelled as such);
* LLM forward calls per task (a forward hook): the forced-template tasks must run exactly one
  forward (the prefill) and zero decode steps.

Roofline multiples for CPU rows: stage FLOPs (counted with torch.utils.flop_counter.FlopCounterMode
on the PyTorch stage; matmul/conv/attention only, so the bound is slightly optimistic) divided by
this CPU's measured peak (best of a 2048^3 fp32 GEMM on all threads).

    python bench/backends_cpu.py                    # tiny + released (~15 min on 2 cores)
    python bench/backends_cpu.py --configs tiny     # ~1 min

Results: bench/results/backends_cpu.json and backends_cpu.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import (  # noqa: E402
    NOT_MEASURED_GPU,
    RELEASED_STAGE_TFLOP,
    RESULTS,
    count_flops,
    cpu_peak_gflops,
    latency_stats,
    machine_info,
    peak_rss_mb,
    roofline_ms,
    roofline_multiple,
    time_call,
)

STAGES = ("mask_encoder", "pixel_decoder", "vision_encoder", "decoder")
FORCED_TASKS = ("referring", "instance", "open_vocabulary", "interactive", "vgd")
LLM_CUT_LAYERS = 2


def build(config_name: str):
    import dataclasses

    import torch

    from xsam_engine.configuration_xsam import XSamConfig
    from xsam_engine.modeling_xsam import XSamModel
    from xsam_engine.tabletop.tokenizer import build_tokenizer
    from xsam_engine.tokenization import add_xsam_tokens

    tokenizer = build_tokenizer()
    add_xsam_tokens(tokenizer)
    if config_name == "released":
        config = XSamConfig.released()
        config.language = dataclasses.replace(config.language, num_hidden_layers=LLM_CUT_LAYERS)
    else:
        config = getattr(XSamConfig, config_name)(vocab_size=len(tokenizer))
    torch.manual_seed(0)
    return XSamModel(config).eval(), tokenizer


def export(config_name: str, directory: str) -> None:
    from xsam_engine.export import export_onnx

    model, _ = build(config_name)
    export_onnx(model, directory)


def request_for(task: str, size: tuple[int, int]):
    from xsam_engine.requests import SegmentationRequest, Task, VisualPrompt

    height, width = size
    box = VisualPrompt.from_box(width * 0.3, height * 0.3, width * 0.6, height * 0.7)
    other = VisualPrompt.from_box(width * 0.1, height * 0.5, width * 0.3, height * 0.9)
    return {
        "referring": SegmentationRequest(task=Task.REFERRING, text="the red cup"),
        "instance": SegmentationRequest(task=Task.INSTANCE, vocabulary=("cup", "bowl", "banana")),
        "open_vocabulary": SegmentationRequest(task=Task.OPEN_VOCABULARY, vocabulary=("mug", "plate")),
        "interactive": SegmentationRequest(task=Task.INTERACTIVE, regions=(box,)),
        "vgd": SegmentationRequest(task=Task.VGD, regions=(box, other)),
    }[task]


def measure(config_name: str, backend: str, onnx_dir: str, repeats: int) -> dict:
    """Child process: every stage and the predictor-level numbers for one backend."""
    import torch

    from xsam_engine.backends import OnnxRuntimeStages
    from xsam_engine.predictor import XSamPredictor
    from xsam_engine.processing import XSamImageProcessor
    from xsam_engine.tabletop.scenes import generate_scene

    baseline = peak_rss_mb()
    model, tokenizer = build(config_name)
    config = model.config
    # Full size: no weight pre-packing (ONNX Runtime otherwise needs ~12.7 GB, beyond this machine with the model)
    stages = model if backend == "torch" else OnnxRuntimeStages(onnx_dir, config, low_memory=config_name == "released")
    if backend != "torch":
        stages.warm_up()
    frames = [generate_scene(seed, width=640, height=480).image for seed in (21, 22, 23, 24)]
    processor = XSamImageProcessor(config.vision, config.mask_encoder)
    sam_pixels = processor.sam_inputs(frames[0]).pixel_values
    siglip_pixels = processor.siglip_inputs(frames[0])
    rows, flops = [], {}
    with torch.inference_mode():
        mask_output = stages.encode_mask_image(sam_pixels)
        pixel_features = stages.encode_pixels(mask_output)
        conditions = torch.randn(1, 1, config.decoder.hidden_dim)
        seg = torch.randn(1, config.decoder.hidden_dim)
        calls = {
            "mask_encoder": lambda: stages.encode_mask_image(sam_pixels),
            "pixel_decoder": lambda: stages.encode_pixels(mask_output),
            "vision_encoder": lambda: stages.encode_vision(siglip_pixels),
            "decoder": lambda: stages.decode(pixel_features, conditions, seg),
        }
        for stage in STAGES:
            if backend == "torch":
                flops[stage] = count_flops(calls[stage])  # doubles as the warm-up run
                times = time_call(calls[stage], repeats, warmup=0)
            else:
                times = time_call(calls[stage], repeats, warmup=1)
            rows.append({"stage": stage, **latency_stats(times)})
            print(f"  {config_name}/{backend} {stage}: {rows[-1]['p50_ms']:.1f} ms", file=sys.stderr, flush=True)

        # LLM prefill (PyTorch for every backend): the released prompt length, measured on the cut stack.
        llm = model.language_model
        tokens = config.vision.num_tokens + config.mask_encoder.num_tokens + 48
        embeds = torch.randn(tokens, config.language.hidden_size)
        llm_flops = count_flops(lambda: llm.hidden_states(embeds)) if backend == "torch" else None
        prefill = latency_stats(time_call(lambda: llm.hidden_states(embeds), max(2, repeats // 2), warmup=0))

        predictor = XSamPredictor(model, tokenizer, stages=None if backend == "torch" else stages)
        predictor.set_image(frames[0])
        referring = request_for("referring", frames[0].shape[:2])
        condition = predictor.encode_request(referring)
        # Command -> masks with the image already received (SigLIP + seg projector + LLM + decoder + post).
        def command():
            predictor._llm_image_tokens = None  # a new command on the same frame recomputes the LLM image tokens
            predictor.segment(referring)
        command_stats = latency_stats(time_call(command, max(2, repeats // 2), warmup=1))
        # Tracking: new frame + cached condition.
        frame_index = iter(range(10**6))
        breakdown: dict[str, list[float]] = {}

        def track():
            predictor.set_image(frames[1 + next(frame_index) % (len(frames) - 1)])
            for stage_name, seconds in predictor.decode(condition).timings.items():
                breakdown.setdefault(stage_name, []).append(seconds)
        full_size = config_name == "released"  # ~45 s per frame on 2 cores: fewer runs, already warm
        tracking = latency_stats(time_call(track, 2 if full_size else repeats, warmup=0 if full_size else 1))
        tracking["predictor_stage_p50_ms"] = {k: latency_stats(v)["p50_ms"] for k, v in breakdown.items()}

        # LLM forward calls per task (hook on the Phi-3 body).
        counter = {"calls": 0}
        handle = model.language_model.llm.model.register_forward_hook(lambda *_: counter.__setitem__("calls", counter["calls"] + 1))
        forward_calls = {}
        for task in FORCED_TASKS if (backend == "torch" or not full_size) else ():
            counter["calls"] = 0
            predictor.segment(request_for(task, frames[0].shape[:2]))
            forward_calls[task] = counter["calls"]
        handle.remove()
    return {
        "config": config_name,
        "backend": backend,
        "device": "cpu",
        "stages": rows,
        "flops": flops,
        "llm_prefill": {"tokens": tokens, "layers_measured": config.language.num_hidden_layers, **prefill,
                        "flops": llm_flops},
        "command_to_masks_referring": command_stats,
        "tracking_frame": tracking,
        "llm_forward_calls": forward_calls,
        "peak_memory_mb": round(peak_rss_mb() - baseline, 1),
    }


def summarise(results: list[dict], peak_gflops: float) -> list[dict]:
    """Flat rows with roofline multiples and the tracking ratio, plus GPU placeholders."""
    flops_by_config = {r["config"]: r["flops"] for r in results if r["backend"] == "torch"}
    rows = []
    for result in results:
        flops = flops_by_config.get(result["config"], {})
        stage_p50 = {row["stage"]: row["p50_ms"] for row in result["stages"]}
        for row in result["stages"]:
            bound = roofline_ms(flops[row["stage"]], peak_gflops * 1e9) if flops.get(row["stage"]) else None
            rows.append({"config": result["config"], "backend": result["backend"], "device": "cpu", "stage": row["stage"],
                         **{k: row[k] for k in ("p50_ms", "p95_ms", "throughput_per_s", "runs")},
                         "gflop": round(flops.get(row["stage"], 0) / 1e9, 3), "roofline_ms": bound,
                         "x_roofline": roofline_multiple(row["p50_ms"], bound),
                         "peak_memory_mb": result["peak_memory_mb"]})
        needed = stage_p50["mask_encoder"] + stage_p50["pixel_decoder"] + stage_p50["decoder"]
        tracking = result["tracking_frame"]["p50_ms"]
        result["tracking_vs_stages"] = {"tracking_p50_ms": tracking, "stages_sum_p50_ms": round(needed, 3),
                                        "ratio": round(tracking / needed, 3), "target": 1.1}
        prefill = result["llm_prefill"]
        scale = 1.0
        if result["config"] == "released":
            scale = 32 / prefill["layers_measured"]  # Phi-3-mini has 32 identical layers
            prefill["scaled_to_32_layers_p50_ms"] = round(prefill["p50_ms"] * scale, 1)
            prefill["note"] = f"measured on a {prefill['layers_measured']}-layer cut at full width, x{scale:.0f} for 32 layers"
        if prefill.get("flops") or flops_by_config.get(result["config"]):
            llm_flops = next((r["llm_prefill"]["flops"] for r in results if r["config"] == result["config"] and r["backend"] == "torch"), None)
            if llm_flops:
                bound = roofline_ms(llm_flops, peak_gflops * 1e9)
                prefill["roofline_ms"] = round(bound, 2)
                prefill["x_roofline"] = roofline_multiple(prefill["p50_ms"], bound)
    for config in sorted({r["config"] for r in results}):
        for stage in STAGES:
            rows.append({"config": config, "backend": "tensorrt", "device": "cuda", "stage": stage, "note": NOT_MEASURED_GPU})
            rows.append({"config": config, "backend": "torch", "device": "cuda", "stage": stage, "note": NOT_MEASURED_GPU})
    return rows


def plot(results: list[dict], rows: list[dict], path: Path, machine: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = [c for c in ("tiny", "released") if any(r["config"] == c for r in results)]
    figure, axes = plt.subplots(1, len(configs), figsize=(6.5 * len(configs), 4.2))
    axes = [axes] if len(configs) == 1 else axes
    for axis, config in zip(axes, configs):
        measured = [r for r in rows if r["config"] == config and r.get("p50_ms") is not None]
        labels = list(dict.fromkeys(r["stage"] for r in measured)) + ["tracking frame"]
        backends = list(dict.fromkeys(r["backend"] for r in measured))
        width = 0.8 / max(1, len(backends))
        for index, backend in enumerate(backends):
            values = [next((r["p50_ms"] for r in measured if r["stage"] == s and r["backend"] == backend), 0) for s in labels[:-1]]
            values.append(next(r["tracking_frame"]["p50_ms"] for r in results if r["config"] == config and r["backend"] == backend))
            positions = [i + index * width for i in range(len(labels))]
            bars = axis.bar(positions, values, width, label=f"{backend} (CPU)")
            for bar, stage in zip(bars, labels):
                multiple = next((r.get("x_roofline") for r in measured if r["stage"] == stage and r["backend"] == backend), None)
                if multiple:
                    axis.annotate(f"{multiple:.1f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                                  ha="center", va="bottom", fontsize=7)
        axis.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))], labels, rotation=20, fontsize=8)
        axis.set_yscale("log")
        axis.set_ylabel("p50 latency, ms (log); label = x roofline")
        axis.set_title(f"{config} configuration, random weights, batch 1")
        axis.legend(fontsize=8)
    figure.suptitle(f"xsam_engine image stages on CPU ({machine['cpu']}, {machine['torch_threads']} threads); "
                    "TensorRT/CUDA: not measured (no GPU)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["tiny", "released"])
    parser.add_argument("--backends", nargs="+", default=["torch", "onnxruntime"])
    parser.add_argument("--repeats", type=int, default=None, help="runs per stage (default 20 tiny, 3 released)")
    parser.add_argument("--output", default=str(RESULTS / "backends_cpu.json"))
    parser.add_argument("--child", nargs=3, metavar=("CONFIG", "BACKEND", "ONNX_DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--export", nargs=2, metavar=("CONFIG", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.export:
        export(*args.export)
        return
    if args.child:
        config_name, backend, onnx_dir = args.child
        print(json.dumps(measure(config_name, backend, onnx_dir, args.repeats)))
        return
    machine = machine_info()
    peak = cpu_peak_gflops()
    print(f"CPU fp32 GEMM peak: {peak:.1f} GFLOP/s ({machine['cpu']}, {machine['torch_threads']} threads)", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="xsam_bench_") as workdir:
        for config in args.configs:
            onnx_dir = str(Path(workdir) / config)
            start = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--export", config, onnx_dir], check=True)
            print(f"{config}: exported in {time.perf_counter() - start:.0f} s", flush=True)
            repeats = args.repeats or (3 if config == "released" else 20)
            for backend in args.backends:
                completed = subprocess.run(
                    [sys.executable, __file__, "--child", config, backend, onnx_dir, "--repeats", str(repeats)],
                    capture_output=True, text=True, check=False)
                if completed.returncode != 0:
                    print(f"{config}/{backend} failed:\n{completed.stderr[-3000:]}", file=sys.stderr)
                    continue
                results.append(json.loads(completed.stdout.strip().splitlines()[-1]))
                print(f"{config}/{backend}: done", flush=True)
    rows = summarise(results, peak)
    report = {
        "benchmark": "X-SAM image stages per backend on CPU: latency p50/p95, throughput, peak RSS, roofline multiples",
        "command": "python bench/backends_cpu.py --configs " + " ".join(args.configs),
        "machine": machine,
        "cpu_peak_gflops_fp32": round(peak, 1),
        "roofline_note": "CPU bound = stage FLOPs (FlopCounterMode, matmul/conv/attention) / measured fp32 GEMM peak",
        "released_analytic_tflop": RELEASED_STAGE_TFLOP,
        "rows": rows,
        "results": results,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    plot(results, rows, output.with_suffix(".png"), machine)
    print(f"wrote {output} and {output.with_suffix('.png')}")


if __name__ == "__main__":
    main()
