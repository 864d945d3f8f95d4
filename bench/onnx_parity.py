"""ONNX export + parity: every graph passes `onnx.checker` and matches PyTorch in ONNX Runtime.

For each configuration (random weights, seed 0) this exports the five graphs into a temporary
directory (never committed), checks them (checker, TensorRT operator set, no float64), compares
each graph alone (max abs error per output) and then the whole predictor with PyTorch stages vs
ONNX Runtime stages on the same tabletop scene and requests (final-mask IoU, all-query mask IoU,
tracking on two more frames). Peak RSS of the process is reported.

    python bench/onnx_parity.py                        # tiny + released (about 10 minutes on 2 cores)
    python bench/onnx_parity.py --configs tiny         # seconds

"released" is `XSamConfig.released()` (SAM ViT-L @1024, SigLIP2-so400m @384, 200-query decoder)
with the Phi-3 stack cut to 2 layers (`--llm-layers`): the LLM is PyTorch in both predictors,
identical code and weights, so its depth does not change what is compared, and the full
32-layer model would need ~15 GB and minutes per prefill on this CPU.

Results: bench/results/onnx_parity.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
IOU_TARGET = 0.99


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def build_config(name: str, llm_layers: int):
    from xsam_engine.configuration_xsam import XSamConfig
    from xsam_engine.tabletop.tokenizer import build_tokenizer
    from xsam_engine.tokenization import add_xsam_tokens

    tokenizer = build_tokenizer()
    add_xsam_tokens(tokenizer)
    if name == "released":
        config = XSamConfig.released()
        config.language = dataclasses.replace(config.language, num_hidden_layers=llm_layers)
        config.name = f"x-sam-released (LLM cut to {llm_layers} layers)"
    else:
        config = getattr(XSamConfig, name)(vocab_size=len(tokenizer))
    return config, tokenizer


def requests_for(image_size: tuple[int, int]):
    from xsam_engine.requests import SegmentationRequest, Task, VisualPrompt

    height, width = image_size
    box = VisualPrompt.from_box(width * 0.3, height * 0.3, width * 0.6, height * 0.7)
    box2 = VisualPrompt.from_box(width * 0.1, height * 0.5, width * 0.3, height * 0.9)
    return [
        SegmentationRequest(task=Task.REFERRING, text="the red cup"),
        SegmentationRequest(task=Task.INSTANCE, vocabulary=("cup", "bowl", "banana"), score_threshold=0.0),
        SegmentationRequest(task=Task.SEMANTIC, vocabulary=("cup", "bowl", "table")),
        SegmentationRequest(task=Task.INTERACTIVE, regions=(box,), score_threshold=0.0),
        SegmentationRequest(task=Task.VGD, regions=(box, box2), score_threshold=0.0),
    ]


def run_config(name: str, llm_layers: int, workdir: Path, onnx_dir: Path | None = None) -> dict:
    import torch

    from xsam_engine.backends import OnnxRuntimeStages
    from xsam_engine.export import export_onnx
    from xsam_engine.export.verify import compare_graphs, compare_predictors
    from xsam_engine.modeling_xsam import XSamModel
    from xsam_engine.predictor import XSamPredictor
    from xsam_engine.tabletop.scenes import generate_scene

    config, tokenizer = build_config(name, llm_layers)
    torch.manual_seed(0)
    model = XSamModel(config).eval()
    parameters = {part: sum(p.numel() for p in getattr(model, part).parameters())
                  for part in ("mask_encoder", "vision_encoder", "seg_decoder", "language_model")}
    start = time.perf_counter()
    if onnx_dir is None:
        onnx_dir = workdir / name
        export_onnx(model, onnx_dir)
    else:  # an earlier export of the same configuration and seed (bit-identical weights)
        from xsam_engine.export import read_manifest

        if read_manifest(onnx_dir)["config"]["mask_encoder"] != json.loads(json.dumps(config.to_dict()))["mask_encoder"]:
            raise ValueError(f"{onnx_dir} was exported from another configuration.")
    export_seconds = time.perf_counter() - start
    print(f"[{name}] exported in {export_seconds:.0f} s, peak RSS {peak_rss_gb():.1f} GB", flush=True)
    full_size = name == "released"
    frames = 1 if full_size else 3  # each frame costs minutes per backend at full size on 2 cores
    images = [generate_scene(seed, width=640, height=480).image for seed in (11, 12, 13)][:frames]
    graphs = compare_graphs(model, onnx_dir, images[0])
    for graph in graphs:
        print(f"[{name}] {graph.graph:15s} max abs error {max(graph.max_abs_error.values()):.2e}  "
              f"TensorRT problems: {graph.tensorrt_problems or 'none'}", flush=True)
    torch_predictor = XSamPredictor(model, tokenizer)
    onnx_predictor = XSamPredictor(model, tokenizer, stages=OnnxRuntimeStages(onnx_dir, config, low_memory=full_size))
    start = time.perf_counter()
    chosen = requests_for(images[0].shape[:2])
    if full_size:
        chosen = [chosen[0], chosen[1], chosen[3]]  # referring, instance, interactive
    requests = compare_predictors(torch_predictor, onnx_predictor, images, chosen)
    for row in requests:
        print(f"[{name}] {row.request:32s} final IoU min {row.min_final_mask_iou:.4f} "
              f"(n={row.instances_torch}/{row.instances_onnxruntime}) all-query IoU {row.all_query_mask_iou:.5f}", flush=True)
    return {
        "config": config.name,
        "parameters": parameters,
        "export_seconds": round(export_seconds, 1),
        "predictor_comparison_seconds": round(time.perf_counter() - start, 1),
        "peak_rss_gb": round(peak_rss_gb(), 2),
        "graphs": [dataclasses.asdict(g) for g in graphs],
        "requests": [dataclasses.asdict(r) for r in requests],
        "min_final_mask_iou": min(r.min_final_mask_iou for r in requests),
        "min_all_query_mask_iou": min(r.all_query_mask_iou for r in requests),
        "passed": all(r.min_final_mask_iou >= IOU_TARGET and r.all_query_mask_iou >= IOU_TARGET for r in requests)
        and all(not g.tensorrt_problems for g in graphs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["tiny", "released"])
    parser.add_argument("--llm-layers", type=int, default=2)
    parser.add_argument("--workdir", default=None, help="where the ONNX files go (default: a temporary directory)")
    parser.add_argument("--onnx-dir", default=None, help="reuse <dir>/<config> exported earlier (same seed)")
    parser.add_argument("--output", default=str(RESULTS / "onnx_parity.json"))
    args = parser.parse_args()
    import onnx
    import onnxruntime
    import torch

    from xsam_engine.export import OPSET

    results = []
    with tempfile.TemporaryDirectory(prefix="xsam_onnx_", dir=args.workdir) as workdir:
        for name in args.configs:
            existing = Path(args.onnx_dir) / name if args.onnx_dir and (Path(args.onnx_dir) / name).is_dir() else None
            results.append(run_config(name, args.llm_layers, Path(workdir), existing))
    report = {
        "benchmark": "ONNX export parity: onnx.checker + ONNX Runtime (CPU EP) vs PyTorch, float32, random weights",
        "command": "python bench/onnx_parity.py --configs " + " ".join(args.configs)
        + (f" --onnx-dir {args.onnx_dir}" if args.onnx_dir else ""),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": torch.get_num_threads(),
                    "python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
                    "onnxruntime": onnxruntime.__version__},
        "opset": OPSET,
        "iou_target": IOU_TARGET,
        "results": results,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
