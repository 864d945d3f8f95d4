"""CPU benchmark of the X-SAM engine: per-stage latency, peak memory and parameters per component.

Each (configuration, component) is measured in its own subprocess so peak memory (ru_maxrss minus
the baseline of an idle interpreter with torch loaded) belongs to that component alone. Random
weights: speed and memory do not depend on the values.

    python bench/engine_cpu.py                     # tiny + tabletop + released, writes bench/results/
    python bench/engine_cpu.py --configs tiny      # quick run

Results: bench/results/engine_cpu.json and engine_cpu.png.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COMPONENTS = ("mask_encoder", "pixel_decoder", "vision_encoder", "seg_projector", "llm_prefill", "decoder")
RESULTS = ROOT / "bench" / "results"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(config_name: str, component: str, dtype_name: str, repeats: int) -> dict:
    """Build one component, run it `repeats` times after a warm-up, report latency and memory."""
    import torch

    from xsam_engine.configuration_xsam import XSamConfig
    from xsam_engine.modeling_llm import XSamLanguageModel
    from xsam_engine.modeling_mask_encoder import XSamMaskEncoder
    from xsam_engine.modeling_seg_decoder import XSamSegDecoder
    from xsam_engine.modeling_vision import XSamVisionEncoder

    torch.set_num_threads(torch.get_num_threads())
    dtype = getattr(torch, dtype_name)
    config = getattr(XSamConfig, config_name)()
    baseline = _peak_mb()
    width = config.language.hidden_size
    encoder = config.mask_encoder
    torch.manual_seed(0)
    with torch.inference_mode():
        if component in ("mask_encoder", "seg_projector", "pixel_decoder"):
            mask_encoder = XSamMaskEncoder(encoder, width).to(dtype).eval()
            module = mask_encoder
            pixels = torch.randn(1, 3, encoder.image_size, encoder.image_size, dtype=dtype)
            if component == "mask_encoder":
                run = lambda: mask_encoder(pixels)  # noqa: E731
            else:
                output = mask_encoder(pixels)
                if component == "seg_projector":
                    run = lambda: mask_encoder.project_tokens(output.projector_input)  # noqa: E731
                    module = mask_encoder.projector
                else:
                    decoder = XSamSegDecoder(config.decoder, encoder.feature_channels).to(dtype).eval()
                    module = decoder.pixel_decoder
                    run = lambda: decoder.encode_pixels(output.multi_scale_features)  # noqa: E731
        elif component == "vision_encoder":
            module = XSamVisionEncoder(config.vision, width).to(dtype).eval()
            pixels = torch.randn(1, 3, config.vision.image_size, config.vision.image_size, dtype=dtype)
            run = lambda: module(pixels)  # noqa: E731
        elif component == "llm_prefill":
            module = XSamLanguageModel(config.language).to(dtype).eval()
            tokens = config.vision.num_tokens + encoder.num_tokens + 48  # image tokens + referring prompt
            embeds = torch.randn(tokens, width, dtype=dtype)
            run = lambda: module.hidden_states(embeds)  # noqa: E731
        elif component == "decoder":
            decoder = XSamSegDecoder(config.decoder, encoder.feature_channels).to(dtype).eval()
            module = decoder
            features = tuple(
                torch.randn(1, c, s, s, dtype=dtype) for c, s in zip(encoder.feature_channels, encoder.feature_sizes)
            )
            pixel_features = decoder.encode_pixels(features)
            conditions = torch.randn(1, 1, config.language.condition_dim, dtype=dtype)
            seg = torch.randn(1, config.language.condition_dim, dtype=dtype)
            run = lambda: decoder(pixel_features, conditions, seg)  # noqa: E731
        else:
            raise ValueError(component)
        parameters = sum(p.numel() for p in module.parameters())
        run()  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    return {
        "config": config_name,
        "component": component,
        "dtype": dtype_name,
        "parameters": parameters,
        "latency_ms": {"median": 1000 * statistics.median(times), "min": 1000 * min(times), "runs": len(times)},
        "peak_memory_mb": round(_peak_mb() - baseline, 1),
        "llm_prefill_tokens": (config.vision.num_tokens + encoder.num_tokens + 48) if component == "llm_prefill" else None,
    }


def _plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = sorted({r["config"] for r in results}, key=["tiny", "tabletop", "released"].index)
    figure, axes = plt.subplots(1, len(configs), figsize=(5 * len(configs), 4))
    axes = [axes] if len(configs) == 1 else axes
    for axis, name in zip(axes, configs):
        rows = [r for r in results if r["config"] == name]
        labels = [f"{r['component']}\n{r['dtype']}" for r in rows]
        axis.barh(labels, [r["latency_ms"]["median"] for r in rows])
        axis.set_xscale("log")
        axis.set_xlabel("CPU latency, median (ms, log)")
        axis.set_title(f"{name} config")
    figure.suptitle(f"xsam_engine per-stage CPU latency ({platform.processor() or platform.machine()}, batch 1)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["tiny", "tabletop", "released"])
    parser.add_argument("--component", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.component:  # child process
        print(json.dumps(measure(args.configs[0], args.component, args.dtype, args.repeats)))
        return
    results = []
    for config_name in args.configs:
        for component in COMPONENTS:
            # The released LLM runs in bf16 (7.6 GB) like the official model; fp32 would need 15 GB.
            dtype = "bfloat16" if (config_name == "released" and component == "llm_prefill") else "float32"
            repeats = 2 if config_name == "released" else args.repeats
            command = [sys.executable, __file__, "--configs", config_name, "--component", component,
                       "--dtype", dtype, "--repeats", str(repeats)]
            completed = subprocess.run(command, capture_output=True, text=True, check=False)
            if completed.returncode != 0:
                print(f"{config_name}/{component} failed:\n{completed.stderr[-2000:]}", file=sys.stderr)
                continue
            row = json.loads(completed.stdout.strip().splitlines()[-1])
            print(f"{config_name:9s} {component:15s} {dtype:9s} {row['latency_ms']['median']:10.1f} ms "
                  f"{row['peak_memory_mb']:9.1f} MB {row['parameters'] / 1e6:9.2f} M params", flush=True)
            results.append(row)
    import torch

    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "xsam_engine per-stage CPU latency, batch 1, random weights",
        "command": "python bench/engine_cpu.py",
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "python": platform.python_version(), "torch": torch.__version__},
        "results": results,
    }
    (RESULTS / "engine_cpu.json").write_text(json.dumps(report, indent=2) + "\n")
    _plot(results, RESULTS / "engine_cpu.png")


if __name__ == "__main__":
    main()
