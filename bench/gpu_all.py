"""Everything the acceleration issue's H100 targets list, in ONE run on an NVIDIA GPU (< 10 minutes).

Full-size X-SAM (`XSamConfig.released()`, random weights), batch 1, warm, p50:

1. SAM ViT-L @1024 (+ connector + seg projector)     PyTorch bf16, SDPA attention
2. SigLIP2-so400m @384 + projector                    PyTorch bf16, SDPA
3. connector + pixel decoder + transformer decoder     PyTorch bf16 (+ CUDA graph of the decoder)
4. Phi-3 prefill of ~1,800 tokens                      PyTorch bf16, SDPA, last-position logits only
5. decode ms/token at that context                     dynamic cache (eager) and static cache + torch.compile
                                                       "reduce-overhead" (CUDA graphs)
6. command -> masks (referring, image already received), through XSamPredictor
7. tracking frames/s (new frame + cached condition)
8. peak GPU memory
9. TensorRT FP16 engines of the four image graphs, if `tensorrt` imports (built into a cache dir)

    python bench/gpu_all.py                      # writes bench/results/gpu_<gpu-name>.json + .png
    python bench/gpu_all.py --skip-tensorrt --repeats 20 --budget-s 540

Each section checks the time budget first and is recorded as skipped when it would overrun.
Nothing runs at import: the pure helpers (arguments, names, targets, roofline multiples,
formatting) are unit-tested on the CPU in tests/test_bench_gpu_all.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import DEVICE_PEAKS, RELEASED_STAGE_TFLOP, RESULTS, latency_stats, roofline_ms, roofline_multiple  # noqa: E402

PREFILL_TOKENS = 1800

# (metric, unit, issue target, research stretch goal, better): the targets of the acceleration
# issue (#8) and the H100 stretch column of research/perf-anchors.md section 7.
H100_TARGETS = (
    ("sam_encoder_ms", "ms", 6.0, 3.5, "lower"),
    ("siglip_ms", "ms", 1.5, 1.0, "lower"),
    ("seg_decoder_ms", "ms", 2.0, 1.0, "lower"),
    ("prefill_ms", "ms", 22.0, 12.0, "lower"),
    ("decode_ms_per_token", "ms", 3.5, 1.8, "lower"),
    ("command_to_masks_ms", "ms", 40.0, 20.0, "lower"),
    ("tracking_fps", "frames/s", 100.0, 200.0, "higher"),
    ("peak_gpu_memory_gb", "GB", 12.0, None, "lower"),
)

# Roofline work per metric (TFLOP), from the analytic counts of the released configuration.
METRIC_TFLOP = {
    "sam_encoder_ms": RELEASED_STAGE_TFLOP["mask_encoder"],
    "siglip_ms": RELEASED_STAGE_TFLOP["vision_encoder"],
    "seg_decoder_ms": RELEASED_STAGE_TFLOP["pixel_decoder"] + RELEASED_STAGE_TFLOP["decoder"],
    "prefill_ms": RELEASED_STAGE_TFLOP["llm_prefill_1800"],
    "command_to_masks_ms": 17.5,
}
DECODE_BYTES_BF16 = 8.15e9  # 7.44 GB weights + 0.71 GB KV at 1.8k context (perf-anchors 3.5)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", choices=["bfloat16", "float16"], default="bfloat16")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per measurement (p50 over them)")
    parser.add_argument("--decode-tokens", type=int, default=32, help="tokens generated for the decode measurement")
    parser.add_argument("--budget-s", type=float, default=540.0, help="stop starting new sections after this")
    parser.add_argument("--skip-tensorrt", action="store_true")
    parser.add_argument("--skip-compile", action="store_true", help="no torch.compile / CUDA-graph variants")
    parser.add_argument("--output-dir", default=str(RESULTS))
    parser.add_argument("--engine-cache-dir", default=None, help="TensorRT engines (default: a temporary directory)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def gpu_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3' (file-name safe)."""
    return "-".join("".join(c if c.isalnum() else " " for c in name.lower()).split()) or "gpu"


def device_peaks(gpu_name: str) -> dict | None:
    """Published peaks for a known GPU name, else None (then the measured GEMM peak is used)."""
    lowered = gpu_name.lower()
    if "h100" in lowered:
        return DEVICE_PEAKS["H100 SXM"]
    if "orin" in lowered:
        return DEVICE_PEAKS["AGX Orin 64GB MAXN"]
    return None


def roofline_for(metric: str, value: float | None, peak_tflops: float, bandwidth_gbs: float) -> dict:
    """Bound (ms) and the measured multiple of it; fps metrics are compared as ms per frame."""
    if value is None:
        return {"roofline_ms": None, "x_roofline": None}
    if metric == "decode_ms_per_token":
        bound = roofline_ms(0.0, 1.0, DECODE_BYTES_BF16, bandwidth_gbs * 1e9)
        return {"roofline_ms": round(bound, 3), "x_roofline": roofline_multiple(value, bound)}
    if metric == "tracking_fps":
        tflop = RELEASED_STAGE_TFLOP["mask_encoder"] + RELEASED_STAGE_TFLOP["pixel_decoder"] + RELEASED_STAGE_TFLOP["decoder"]
        bound = roofline_ms(tflop * 1e12, peak_tflops * 1e12)
        return {"roofline_ms": round(bound, 3), "x_roofline": roofline_multiple(1000.0 / value, bound) if value else None}
    if metric not in METRIC_TFLOP:
        return {"roofline_ms": None, "x_roofline": None}
    bound = roofline_ms(METRIC_TFLOP[metric] * 1e12, peak_tflops * 1e12)
    return {"roofline_ms": round(bound, 3), "x_roofline": roofline_multiple(value, bound)}


def evaluate_targets(metrics: dict[str, float | None], peak_tflops: float, bandwidth_gbs: float) -> list[dict]:
    """One row per H100 target: value, issue target, research goal, pass/fail, roofline multiple."""
    rows = []
    for metric, unit, target, goal, better in H100_TARGETS:
        value = metrics.get(metric)

        def meets(limit):
            if value is None or limit is None:
                return None
            return value <= limit if better == "lower" else value >= limit

        rows.append({"metric": metric, "unit": unit, "value": value, "issue_target": target, "meets_target": meets(target),
                     "research_goal": goal, "meets_goal": meets(goal), **roofline_for(metric, value, peak_tflops, bandwidth_gbs)})
    return rows


def format_rows(rows: list[dict]) -> str:
    """Plain-text table for the console (and the README)."""
    def show(value, digits=2):
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "NO"
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    header = f"{'metric':24s} {'value':>10s} {'unit':8s} {'target':>8s} {'ok':>4s} {'goal':>8s} {'ok':>4s} {'x roof':>7s}"
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['metric']:24s} {show(row['value']):>10s} {row['unit']:8s} {show(row['issue_target'], 1):>8s} "
            f"{show(row['meets_target']):>4s} {show(row['research_goal'], 1):>8s} {show(row['meets_goal']):>4s} "
            f"{show(row['x_roofline']):>7s}"
        )
    return "\n".join(lines)


@dataclass
class Budget:
    """Wall-clock budget: `allows(estimate_s)` is False once starting a section would overrun."""

    seconds: float
    start: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def allows(self, estimate_s: float = 0.0) -> bool:
        return self.elapsed() + estimate_s <= self.seconds


# -- GPU measurement (only runs under main) ---------------------------------------------------------


def _cuda_time(function, repeats: int, warmup: int = 2) -> list[float]:
    """Seconds per call from CUDA events (GPU clock), after `warmup` calls."""
    import torch

    for _ in range(warmup):
        function()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000.0)
    return times


def _wall_time(function, repeats: int, warmup: int = 2) -> list[float]:
    import torch

    for _ in range(warmup):
        function()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def measured_gemm_tflops(dtype, size: int = 8192) -> float:
    import torch

    a = torch.randn(size, size, device="cuda", dtype=dtype)
    b = torch.randn(size, size, device="cuda", dtype=dtype)
    best = min(_cuda_time(lambda: a @ b, 10, warmup=3))
    return 2 * size**3 / best / 1e12


def build_released(dtype, device="cuda"):
    import dataclasses

    import torch

    from xsam_engine.configuration_xsam import XSamConfig
    from xsam_engine.modeling_xsam import XSamModel
    from xsam_engine.tabletop.tokenizer import build_tokenizer
    from xsam_engine.tokenization import add_xsam_tokens

    tokenizer = build_tokenizer()
    add_xsam_tokens(tokenizer)
    config = XSamConfig.released()
    config.mask_encoder = dataclasses.replace(config.mask_encoder, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(device):
        model = XSamModel(config)
    return model.to(dtype).eval(), tokenizer


def run(args: argparse.Namespace) -> dict:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu_all.py needs an NVIDIA GPU (torch.cuda.is_available() is False).")
    budget = Budget(args.budget_s)
    dtype = getattr(torch, args.dtype)
    gpu = torch.cuda.get_device_name()
    torch.backends.cuda.matmul.allow_tf32 = True
    report: dict = {"gpu": gpu, "dtype": args.dtype, "repeats": args.repeats, "sections": {}, "errors": {}}
    peaks = device_peaks(gpu)
    measured_peak = measured_gemm_tflops(dtype)
    report["measured_gemm_tflops"] = round(measured_peak, 1)
    peak_tflops = peaks["fp16_tflops"] if peaks else measured_peak
    bandwidth = peaks["bandwidth_gbs"] if peaks else 1000.0
    report["roofline_basis"] = {"peak_tflops": peak_tflops, "bandwidth_gbs": bandwidth,
                                "source": "published dense peak (perf-anchors section 2)" if peaks else "measured GEMM"}
    metrics: dict[str, float | None] = {}

    def section(name: str, estimate_s: float):
        def wrap(function):
            if not budget.allows(estimate_s):
                report["sections"][name] = "skipped: time budget"
                return None
            started = time.perf_counter()
            try:
                result = function()
                report["sections"][name] = f"ok in {time.perf_counter() - started:.0f} s"
                return result
            except Exception as error:  # record and go on: one failing section must not lose the others
                report["errors"][name] = f"{error.__class__.__name__}: {error}\n{traceback.format_exc()[-1500:]}"
                report["sections"][name] = "failed"
                return None
        return wrap

    from xsam_engine.predictor import XSamPredictor
    from xsam_engine.processing import XSamImageProcessor
    from xsam_engine.requests import SegmentationRequest, Task
    from xsam_engine.tabletop.scenes import generate_scene

    model, tokenizer = build_released(dtype)
    config = model.config
    processor = XSamImageProcessor(config.vision, config.mask_encoder)
    frames = [generate_scene(seed, width=1280, height=720).image for seed in range(5)]
    sam_pixels = processor.sam_inputs(frames[0]).pixel_values.cuda()
    siglip_pixels = processor.siglip_inputs(frames[0]).cuda()
    details: dict = {}
    with torch.inference_mode():
        @section("encoders", 60)
        def _encoders():
            details["sam_encoder"] = latency_stats(_cuda_time(lambda: model.encode_mask_image(sam_pixels), args.repeats))
            details["siglip"] = latency_stats(_cuda_time(lambda: model.encode_vision(siglip_pixels), args.repeats))
            metrics["sam_encoder_ms"] = details["sam_encoder"]["p50_ms"]
            metrics["siglip_ms"] = details["siglip"]["p50_ms"]

        mask_output = model.encode_mask_image(sam_pixels)
        pixel_features = model.encode_pixels(mask_output)
        conditions = torch.randn(1, 1, config.decoder.hidden_dim, device="cuda", dtype=dtype)
        seg = torch.randn(1, config.decoder.hidden_dim, device="cuda", dtype=dtype)

        @section("seg_decoder", 40)
        def _decoder():
            details["pixel_decoder"] = latency_stats(_cuda_time(lambda: model.encode_pixels(mask_output), args.repeats))
            details["mask_decoder"] = latency_stats(_cuda_time(lambda: model.decode(pixel_features, conditions, seg), args.repeats))
            metrics["seg_decoder_ms"] = details["pixel_decoder"]["p50_ms"] + details["mask_decoder"]["p50_ms"]
            if not args.skip_compile:  # the decoder is launch-bound: a CUDA graph via torch.compile
                compiled = torch.compile(lambda: model.decode(pixel_features, conditions, seg).mask_logits, mode="reduce-overhead")
                details["mask_decoder_cuda_graph"] = latency_stats(_cuda_time(compiled, args.repeats, warmup=3))
                metrics["seg_decoder_ms"] = details["pixel_decoder"]["p50_ms"] + min(
                    details["mask_decoder"]["p50_ms"], details["mask_decoder_cuda_graph"]["p50_ms"])

        llm = model.language_model.llm
        embeds = torch.randn(1, PREFILL_TOKENS, config.language.hidden_size, device="cuda", dtype=dtype)

        @section("prefill", 40)
        def _prefill():
            details["prefill"] = latency_stats(_cuda_time(lambda: llm.model(inputs_embeds=embeds, use_cache=False), args.repeats))
            metrics["prefill_ms"] = details["prefill"]["p50_ms"]

        @section("decode", 90)
        def _decode():
            from transformers.cache_utils import DynamicCache, StaticCache

            embedding = llm.get_input_embeddings()
            token = torch.tensor([[42]], device="cuda")

            def dynamic_decode():
                cache = DynamicCache(config=llm.config)
                llm.model(inputs_embeds=embeds, past_key_values=cache, use_cache=True)
                torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(args.decode_tokens):
                    hidden = llm.model(inputs_embeds=embedding(token), past_key_values=cache, use_cache=True).last_hidden_state
                    llm.lm_head(hidden[:, -1])
                torch.cuda.synchronize()
                return (time.perf_counter() - start) / args.decode_tokens

            per_token = [dynamic_decode() for _ in range(3)]
            details["decode_dynamic_cache"] = latency_stats(per_token)
            metrics["decode_ms_per_token"] = details["decode_dynamic_cache"]["p50_ms"]
            if args.skip_compile:
                return
            max_len = PREFILL_TOKENS + args.decode_tokens + 8
            cache = StaticCache(config=llm.config, max_cache_len=max_len)
            llm.model(inputs_embeds=embeds, past_key_values=cache, use_cache=True,
                      cache_position=torch.arange(PREFILL_TOKENS, device="cuda"))
            step_embeds = embedding(token)
            position = torch.tensor([PREFILL_TOKENS], device="cuda")

            @torch.compile(mode="reduce-overhead", fullgraph=False)
            def step(inputs, cache_position):
                hidden = llm.model(inputs_embeds=inputs, past_key_values=cache, use_cache=True,
                                   cache_position=cache_position).last_hidden_state
                return llm.lm_head(hidden[:, -1])

            for _ in range(3):  # compile + CUDA-graph capture
                step(step_embeds, position)
            torch.cuda.synchronize()
            start = time.perf_counter()
            for index in range(args.decode_tokens):
                step(step_embeds, position + index)  # same buffer shapes: the graph replays
            torch.cuda.synchronize()
            static = (time.perf_counter() - start) / args.decode_tokens
            details["decode_static_cache_cuda_graph"] = latency_stats([static])
            metrics["decode_ms_per_token"] = min(metrics["decode_ms_per_token"], 1000 * static)

        predictor = XSamPredictor(model, tokenizer)
        referring = SegmentationRequest(task=Task.REFERRING, text="the red cup")

        @section("predictor", 60)
        def _predictor():
            predictor.set_image(frames[0])
            condition = predictor.encode_request(referring)

            def command():
                predictor._llm_image_tokens = None  # include SigLIP + seg projector, as for a fresh command
                predictor.segment(referring)

            details["command_to_masks"] = latency_stats(_wall_time(command, max(5, args.repeats // 2)))
            metrics["command_to_masks_ms"] = details["command_to_masks"]["p50_ms"]
            counter = iter(range(10**6))

            def track():
                predictor.set_image(frames[1 + next(counter) % (len(frames) - 1)])
                predictor.decode(condition)

            details["tracking_frame"] = latency_stats(_wall_time(track, args.repeats))
            metrics["tracking_fps"] = round(1000.0 / details["tracking_frame"]["p50_ms"], 1)

        metrics["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)

    if not args.skip_tensorrt:
        @section("tensorrt", 240)
        def _tensorrt():
            details["tensorrt"] = tensorrt_section(args, budget)

    report["details"] = details
    report["metrics"] = metrics
    report["targets"] = evaluate_targets(metrics, peak_tflops, bandwidth)
    report["elapsed_s"] = round(budget.elapsed(), 1)
    return report


def tensorrt_section(args: argparse.Namespace, budget: Budget) -> dict:
    """Export the image graphs (fp32, CPU), build FP16 engines, time each engine (GPU clock)."""
    import dataclasses
    import tempfile

    import tensorrt as trt
    import torch

    from xsam_engine.configuration_xsam import XSamConfig
    from xsam_engine.export import export_onnx, graph_specs
    from xsam_engine.export.graphs import example_inputs
    from xsam_engine.modeling_xsam import XSamModel
    from xsam_engine.tensorrt import EngineOptions, get_engine
    from xsam_engine.tensorrt.runner import TensorRTRunner

    config = XSamConfig.released()
    config.language = dataclasses.replace(config.language, num_hidden_layers=1)  # the LLM is not exported
    torch.manual_seed(0)
    model = XSamModel(config).eval()
    workdir = Path(args.engine_cache_dir or tempfile.mkdtemp(prefix="xsam_trt_"))
    graphs = ("mask_encoder", "pixel_decoder", "mask_decoder", "vision_encoder")
    paths = export_onnx(model, workdir / "onnx", graphs=graphs)
    del model
    specs = graph_specs(config)
    results = {"tensorrt": trt.__version__}
    for name in graphs:
        if not budget.allows(60):
            results[name] = "skipped: time budget"
            continue
        options = EngineOptions(engine_cache_dir=workdir / "engines", enable_fp16=True)
        started = time.perf_counter()
        path, key, _ = get_engine(paths[name], specs[name], options, config.sampler_num_points)
        runner = TensorRTRunner(path, dict(key.profile))
        inputs = {k: v.cuda() for k, v in example_inputs(specs[name], {"num_conditions": 1}).items()}
        stats = latency_stats(_cuda_time(lambda: runner(**inputs), args.repeats))
        results[name] = {"fp16": stats, "build_or_load_s": round(time.perf_counter() - started, 1)}
    return results


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["targets"] if r["value"] is not None and r["unit"] == "ms"]
    figure, axis = plt.subplots(figsize=(8, 4))
    names = [r["metric"] for r in rows]
    axis.barh(names, [r["value"] for r in rows], label="measured p50")
    axis.scatter([r["issue_target"] or float("nan") for r in rows], names, marker="|", s=300, color="red", label="issue target")
    axis.scatter([r["research_goal"] or float("nan") for r in rows], names, marker="|", s=300, color="green", label="research goal")
    axis.scatter([r["roofline_ms"] or float("nan") for r in rows], names, marker="x", color="black", label="roofline")
    axis.set_xscale("log")
    axis.set_xlabel("ms (log)")
    axis.set_title(f"X-SAM on {report['gpu']} ({report['dtype']}, batch 1, random weights)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = run(args)
    report["command"] = "python bench/gpu_all.py " + " ".join(argv if argv is not None else sys.argv[1:])
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = output_dir / f"gpu_{gpu_slug(report['gpu'])}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, stem.with_suffix(".png"))
    print(format_rows(report["targets"]))
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.png')}")


if __name__ == "__main__":
    main()
