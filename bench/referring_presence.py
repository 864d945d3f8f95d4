"""Absent-object commands vs present-object recall for referring, per score threshold (issue 12).

    python bench/referring_presence.py [--model DIR] [--scenes 200]
    python bench/referring_presence.py --model DIR --first-seed 920000000 --scenes 100 \
        --set-default 0.04 --out bench/results/referring_threshold_validation.json

The second form chooses a model's default referring / reasoning threshold on a validation range
(disjoint from the evaluation's seeds): the lowest threshold at which at most the given share of
absent-object commands returns an instance; it writes the threshold and the rule into the model's
config.json (`postprocess.task_score_thresholds`, `metadata.thresholds`).

Writes bench/results/referring_presence.json and .png: for each threshold the rate of absent-object
commands ("green bottle" on a table without one) that still return an instance and the recall of
present objects, plus the row at the model's default referring threshold. Definitions:
xsam_engine/evaluation/presence.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, machine_info  # noqa: E402


def plot(report: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["by_threshold"]
    thresholds = [row["threshold"] for row in rows]
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for key, label, style in (
        ("absent_returned", "absent objects that still return an instance", "r-"),
        ("absent_colour_returned", "... of which: class present, other colour", "r:"),
        ("present_recall", "present objects answered", "b-"),
        ("present_recall_iou50", "present objects answered with IoU >= 0.5", "b--"),
    ):
        axis.plot(thresholds, [row[key] for row in rows], style, label=label)
    default = report["default"]["threshold"]
    axis.plot(thresholds, [row["present_recall"] - row["absent_returned"] for row in rows], "k-", linewidth=0.8,
              label="present recall - absent rate (Youden's J)")
    axis.axvline(default, color="grey", linewidth=1)
    axis.text(default + 0.01, 0.95, f"model default {default:.2f}", color="grey")
    axis.set_xlabel("referring score threshold")
    axis.set_ylabel("fraction of commands")
    axis.set_ylim(-0.05, 1.02)
    axis.set_title(title)
    axis.legend(loc="center right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model directory (default: the shipped tabletop model)")
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--first-seed", type=int, default=None, help="first scene seed (default: the held-out 9e8)")
    parser.add_argument("--set-default", type=float, default=None, metavar="MAX_ABSENT_RATE",
                        help="choose and write the model's default referring/reasoning threshold (see above)")
    parser.add_argument("--out", default=str(RESULTS / "referring_presence.json"))
    args = parser.parse_args(argv)

    import torch

    from xsam_engine.evaluation.evaluate import HELD_OUT_FIRST_SEED
    from xsam_engine.evaluation.presence import collect_answers, presence_report, write_default_threshold
    from xsam_engine.predictor import XSamPredictor
    from xsam_engine.requests import Task

    torch.set_num_threads(2)
    predictor = XSamPredictor.from_pretrained(args.model)
    default = predictor.model.config.postprocess.thresholds_for(Task.REFERRING).score
    started = time.perf_counter()
    first_seed = HELD_OUT_FIRST_SEED if args.first_seed is None else args.first_seed
    answers = collect_answers(predictor, num_scenes=args.scenes, first_seed=first_seed, progress=True)
    if args.set_default is not None:
        if args.model is None:
            raise SystemExit("--set-default writes into a model directory: pass --model DIR.")
        default = write_default_threshold(args.model, presence_report(answers), args.set_default,
                                          f"seeds {first_seed}..{first_seed + args.scenes - 1}")
    report = presence_report(answers, default=default)
    report.update(model=args.model or "shipped tabletop default model", scenes=args.scenes, first_seed=first_seed,
                  seconds=round(time.perf_counter() - started, 1), machine=machine_info())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out.with_suffix(".png"), f"Referring on {args.scenes} held-out scenes: absent vs present")
    row = report["default"]
    print(f"default threshold {default:.2f}: absent commands returning an instance {row['absent_returned']:.3f} "
          f"(other class {row['absent_class_returned']:.3f}, other colour {row['absent_colour_returned']:.3f}); "
          f"present recall {row['present_recall']:.3f} (IoU >= 0.5: {row['present_recall_iou50']:.3f})")
    print(f"threshold with the largest present recall - absent rate (Youden's J): {report['youden_threshold']:.2f}")
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
