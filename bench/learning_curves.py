"""Issue 14's learning curves: held-out metrics of every task against the training step, per recipe.

    python bench/learning_curves.py --reference [--model DIR]        # step-0 point of a warm start
    python bench/learning_curves.py --run NAME=runs/DIR [--run ...]   # collect, write JSON + PNG
    python bench/learning_curves.py --keep --run NAME=runs/DIR        # add runs to the committed ones

Each run is a `python -m xsam_engine.training ... --eval-every N` output directory; its
`curve.json` holds the points the trainer wrote as it went (`xsam_engine/training/curves.py`:
the fixed 50-scene held-out subset from seed 9e8, every task's headline metric, the referring
absent-object rate, training wall and CPU seconds). Runs that start from a saved model
(`--init-from`) get that model's evaluation as their step-0 point (`--reference` writes it once
to runs/reference_point.json, so the runs do not each repeat it); runs from scratch get no
step-0 point and are drawn as their own block, with the reference as a dotted line. `--keep`
keeps the runs already in the output JSON (their directories may be gone) and adds or replaces
the `--run` ones. Writes bench/results/learning_curves.json and .png.
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
    """{name: curve} of each `NAME=DIR`, with its `start` (`run_start`) and directory.

    A run that continues a saved model gets the reference point as its step 0 (when the file
    exists and the run has no step-0 point of its own); a run from scratch does not.
    Raises ValueError for a spec without `=` or a directory without curve points.
    """
    from xsam_engine.training.curves import CURVE_NAME, read_curve, run_start

    curves = {}
    for spec in runs:
        name, separator, directory = spec.partition("=")
        if not separator or not name or not directory:
            raise ValueError(f"--run {spec!r}: give NAME=OUTPUT_DIR, e.g. --run 'base=runs/scratch_base'.")
        curve = read_curve(Path(directory) / CURVE_NAME)
        if not curve["points"]:
            raise ValueError(f"{directory} has no {CURVE_NAME} points yet; train it with --eval-every.")
        curve["start"] = run_start(curve["training"])
        if curve["training"].get("init_from") and reference.is_file() and curve["points"][0]["step"] > 0:
            curve["points"] = [json.loads(reference.read_text()), *curve["points"]]
        curve["directory"] = directory
        curves[name] = curve
    return curves


def kept_runs(out: Path, replaced: dict) -> dict:
    """The runs already in `out` (a learning_curves.json) that `replaced` does not name again."""
    from xsam_engine.training.curves import run_start

    if not out.is_file():
        return {}
    kept = {name: curve for name, curve in json.loads(out.read_text())["runs"].items() if name not in replaced}
    for curve in kept.values():
        curve.setdefault("start", run_start(curve["training"]))
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", action="store_true", help="evaluate --model as the step-0 point of warm starts")
    parser.add_argument("--model", default=None, help="with --reference: model directory (default: the shipped one)")
    parser.add_argument("--scenes", type=int, default=50)
    parser.add_argument("--run", action="append", default=[], help="NAME=OUTPUT_DIR of a training run with curve.json")
    parser.add_argument("--out", default=str(RESULTS / "learning_curves.json"))
    parser.add_argument("--keep", action="store_true", help="keep the runs already in --out and add the --run ones")
    parser.add_argument("--reference-point", default=str(REFERENCE),
                        help="the step-0 point of warm starts (written by --reference, read when collecting)")
    args = parser.parse_args(argv)
    if args.reference:
        reference_point(args.model, args.scenes, Path(args.reference_point))
        return 0
    from xsam_engine.training.curves import plot_curves

    out = Path(args.out)
    reference_path = Path(args.reference_point)
    try:
        new = collect(args.run, reference_path)
    except ValueError as error:
        parser.error(str(error))
    curves = {**(kept_runs(out, new) if args.keep else {}), **new}
    if not curves:
        parser.error("no runs: give --run NAME=OUTPUT_DIR (or --keep with an existing --out).")
    reference = json.loads(reference_path.read_text()) if reference_path.is_file() else None
    if reference is None and args.keep and out.is_file():
        reference = json.loads(out.read_text()).get("reference")
    report = {"machine": machine_info(), "held_out": "50 scenes from seed 900,000,000 (fixed subset)",
              "reference": reference, "runs": curves}
    out.write_text(json.dumps(report, indent=1) + "\n")
    plot_curves(curves, out.with_suffix(".png"), reference=reference)
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
