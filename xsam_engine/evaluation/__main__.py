"""`python -m xsam_engine.evaluation [--model DIR] [--scenes N] [--out FILE]`: held-out tabletop metrics."""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
from pathlib import Path

from ..checkpoint import DEFAULT_MODEL_DIR, read_model_metadata
from ..predictor import XSamPredictor
from .evaluate import HELD_OUT_FIRST_SEED, evaluate_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Evaluate a model on held-out generated tabletop scenes.")
    parser.add_argument("--model", default=None, help="model directory (default: the shipped tabletop model)")
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--first-seed", type=int, default=HELD_OUT_FIRST_SEED)
    parser.add_argument("--out", default=None, help="write the JSON report here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    predictor = XSamPredictor.from_pretrained(args.model)
    report = evaluate_model(predictor, num_scenes=args.scenes, first_seed=args.first_seed, progress=True)
    model_dir = Path(args.model) if args.model else DEFAULT_MODEL_DIR
    report["model"] = {"path": str(args.model or "default"), "metadata": read_model_metadata(model_dir)}
    report["command"] = "python -m xsam_engine.evaluation " + " ".join(sys.argv[1:] if argv is None else argv)
    report["machine"] = {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()}
    text = json.dumps(report, indent=2)
    print(json.dumps(report["metrics"], indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
