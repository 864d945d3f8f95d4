"""Issue 14's learning curves: held-out metrics of every task against the training step, per recipe.

    python bench/learning_curves.py --reference [--model DIR]        # step-0 point of a warm start
    python bench/learning_curves.py --run NAME=runs/DIR [--run ...]   # collect, write JSON + PNG

Each run is a `python -m xsam_engine.training ... --eval-every N` output directory; its
`curve.json` holds the points the trainer wrote as it went (`xsam_engine/training/curves.py`:
the fixed 50-scene held-out subset from seed 9e8, every task's headline metric, the referring
absent-object rate, training wall and CPU seconds). Runs that start from a saved model
(`--init-from`) get that model's evaluation as their step-0 point (`--reference` writes it once
to runs/reference_point.json, so the runs do not each repeat it). Writes
bench/results/learning_curves.json and .png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, ROOT, machine_info  # noqa: E402

REFERENCE = ROOT / "runs" / "reference_point.json"


def reference_point(model: str | None, scenes: int, out: Path) -> None:
    import torch

    from xsam_engine.predictor import XSamPredictor
    from xsam_engine.training.curves import evaluate_point

    torch.set_num_threads(1)
    predictor = XSamPredictor.from_pretrained(model)
    started = time.process_time()
    point = {"step": 0, "train_wall_seconds": 0.0, "train_cpu_seconds": 0.0, "model": model or "default"}
    point.update(evaluate_point(predictor, num_scenes=scenes))
    point["eval_cpu_seconds"] = round(time.process_time() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(point, indent=1) + "\n")


def collect(runs: list[str], reference: Path) -> dict:
    from xsam_engine.training.curves import CURVE_NAME, read_curve

    curves = {}
    for spec in runs:
        name, _, directory = spec.partition("=")
        curve = read_curve(Path(directory) / CURVE_NAME)
        if not curve["points"]:
            raise ValueError(f"{directory} has no {CURVE_NAME} points yet; train it with --eval-every.")
        if curve["training"].get("init_from") and reference.is_file() and curve["points"][0]["step"] > 0:
            curve["points"] = [json.loads(reference.read_text()), *curve["points"]]
        curve["directory"] = directory
        curves[name] = curve
    return curves


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", action="store_true", help="evaluate --model as the step-0 point of warm starts")
    parser.add_argument("--model", default=None, help="with --reference: model directory (default: the shipped one)")
    parser.add_argument("--scenes", type=int, default=50)
    parser.add_argument("--run", action="append", default=[], help="NAME=OUTPUT_DIR of a training run with curve.json")
    parser.add_argument("--out", default=str(RESULTS / "learning_curves.json"))
    args = parser.parse_args(argv)
    if args.reference:
        reference_point(args.model, args.scenes, REFERENCE)
        return 0
    from xsam_engine.training.curves import plot_curves

    curves = collect(args.run, REFERENCE)
    out = Path(args.out)
    report = {"machine": machine_info(), "held_out": "50 scenes from seed 900,000,000 (fixed subset)", "runs": curves}
    out.write_text(json.dumps(report, indent=1) + "\n")
    plot_curves(curves, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
