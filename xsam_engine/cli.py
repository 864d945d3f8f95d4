"""`xsam` command line: segment an image file and print JSON instances (optionally write an overlay).

    xsam segment IMAGE "grasp the red cup" [--model DIR] [--task TASK] [--points x,y ...]
                 [--negative-points x,y ...] [--box x0,y0,x1,y1 ...] [--scribble x,y;x,y;... ...]
                 [--mask PNG ...] [--vocabulary cup,bowl] [--out overlay.png] [--device auto|cpu|cuda]
                 [--backend auto|tensorrt|onnxruntime|torch|triton] [--triton-url HOST:PORT]
                 [--triton-protocol grpc|http] [--triton-timeout S] [--triton-fallback]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from .commands import parse_command
from .requests import SegmentationRequest, Task, VisualPrompt
from .results import SegmentationResult


def _pair(text: str) -> tuple[float, float]:
    x, y = (float(v) for v in text.split(","))
    return x, y


def _box(text: str) -> tuple[float, float, float, float]:
    values = tuple(float(v) for v in text.split(","))
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"a box is x0,y0,x1,y1, got {text!r}")
    return values  # type: ignore[return-value]


def _scribble(text: str) -> np.ndarray:
    return np.array([_pair(point) for point in text.split(";") if point], dtype=np.float32)


def build_parser() -> argparse.ArgumentParser:
    from .backends import BACKENDS
    from .backends.triton_stages import PROTOCOLS

    parser = argparse.ArgumentParser(prog="xsam", description="X-SAM 'any segmentation' on an image file.")
    sub = parser.add_subparsers(dest="command", required=True)
    segment = sub.add_parser("segment", help="segment an image and print the instances as JSON")
    segment.add_argument("image", help="image file (PNG/JPEG)")
    segment.add_argument("text", nargs="?", default="", help='natural command or expression, e.g. "grasp the red cup"')
    segment.add_argument("--model", default=None, help="model directory (default: the shipped tabletop demo model)")
    segment.add_argument("--task", choices=[t.value for t in Task], default=None, help="force a task (default: from the text / prompts)")
    segment.add_argument("--points", nargs="+", type=_pair, default=[], metavar="X,Y", help="positive click(s) in pixels")
    segment.add_argument("--negative-points", nargs="+", type=_pair, default=[], metavar="X,Y")
    segment.add_argument("--box", nargs="+", type=_box, default=[], metavar="X0,Y0,X1,Y1")
    segment.add_argument("--scribble", nargs="+", type=_scribble, default=[], metavar="X,Y;X,Y;...")
    segment.add_argument("--mask", nargs="+", default=[], metavar="PNG", help="prompt mask image(s), non-zero = inside")
    segment.add_argument("--vocabulary", default="", help="comma-separated class names (generic / open-vocabulary)")
    segment.add_argument("--stuff", default="", help="comma-separated stuff classes (panoptic)")
    segment.add_argument("--score-threshold", type=float, default=None,
                         help="score threshold in [0, 1] (default: the model's for the task; README 'Thresholds')")
    segment.add_argument("--mask-threshold", type=float, default=None, help="pixel probability threshold in (0, 1)")
    segment.add_argument("--overlap-threshold", type=float, default=None, help="panoptic segment validity in [0, 1]")
    segment.add_argument("--out", default=None, help="write an overlay PNG here")
    segment.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    segment.add_argument("--backend", default="auto", choices=list(BACKENDS),
                         help="image-stage backend; one log line says what is used if it cannot run here")
    segment.add_argument("--triton-url", default="127.0.0.1:8001", metavar="HOST:PORT",
                         help="--backend triton: the Triton server (docs/fleet.md)")
    segment.add_argument("--triton-protocol", default="grpc", choices=list(PROTOCOLS))
    segment.add_argument("--triton-timeout", type=float, default=5.0, metavar="S", help="limit of every Triton request, seconds")
    segment.add_argument("--triton-fallback", action="store_true",
                         help="run the image stages locally while the Triton server is unreachable (default: error)")
    return parser


def _regions(args: argparse.Namespace) -> list[VisualPrompt]:
    import cv2

    regions: list[VisualPrompt] = []
    if args.points or args.negative_points:
        points = list(args.points) + list(args.negative_points)
        labels = [1] * len(args.points) + [0] * len(args.negative_points)
        regions.append(VisualPrompt.points_with_labels(np.array(points), np.array(labels)))
    regions += [VisualPrompt.from_box(*box) for box in args.box]
    regions += [VisualPrompt.scribble(points) for points in args.scribble]
    for path in args.mask:
        mask = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise SystemExit(f"error: cannot read mask image {path}")
        regions.append(VisualPrompt.from_mask(mask > 0))
    return regions


def request_from_args(args: argparse.Namespace) -> SegmentationRequest:
    """Build the request: an explicit --task wins; visual prompts mean interactive (one) or VGD (several);
    otherwise the text is parsed as a natural command."""
    vocabulary = tuple(v.strip() for v in args.vocabulary.split(",") if v.strip())
    stuff = tuple(v.strip() for v in args.stuff.split(",") if v.strip())
    regions = tuple(_regions(args))
    thresholds = {"score_threshold": args.score_threshold, "mask_threshold": args.mask_threshold,
                  "overlap_threshold": args.overlap_threshold}
    if args.task:
        task, text = Task(args.task), args.text
        if task is Task.REFERRING and text:
            parsed = parse_command(text)  # accept "grasp the red cup" as well as "red cup"
            text = parsed.text if parsed.task is Task.REFERRING else text
    elif regions:
        task, text = (Task.INTERACTIVE if len(regions) == 1 else Task.VGD), args.text
    elif vocabulary and not args.text:
        task, text = (Task.PANOPTIC if stuff else Task.INSTANCE), ""
    else:
        parsed = parse_command(args.text, default_vocabulary=vocabulary, stuff_vocabulary=stuff)
        return replace(parsed, **thresholds)
    return SegmentationRequest(
        task=task, text=text, vocabulary=vocabulary, stuff_vocabulary=stuff, regions=regions, **thresholds,
    )


def result_to_json(result: SegmentationResult) -> dict:
    return {
        "task": result.task.value,
        "text": result.text,
        "labels": list(result.labels),
        "image_size": list(result.image_size),
        "message": result.message,
        "thresholds": None if result.thresholds is None else {
            "score": result.thresholds.score, "mask": result.thresholds.mask, "overlap": result.thresholds.overlap},
        "instances": [
            {"label": i.label, "score": round(i.score, 4), "box_xyxy": list(i.box_xyxy), "area": i.area,
             "class_index": i.class_index}
            for i in result.instances
        ],
        "timings_ms": {k: round(v * 1000, 2) for k, v in result.timings.items()},
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import cv2

    from .backends import create_predictor
    from .triton.errors import TritonServerError
    from .visualization import draw_overlay

    bgr = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if bgr is None:
        print(f"error: cannot read image {args.image}", file=sys.stderr)
        return 2
    try:
        request = request_from_args(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        predictor, _ = create_predictor(
            args.model, backend=args.backend, device=args.device, triton_url=args.triton_url,
            triton_protocol=args.triton_protocol, triton_timeout_s=args.triton_timeout, triton_fallback=args.triton_fallback,
        )
    except (RuntimeError, ValueError, OSError) as error:  # Triton server unreachable / lacks a model, a bad
        print(f"error: {error}", file=sys.stderr)          # --triton-url, a --model that is not a model directory
        return 2
    try:
        predictor.set_image(bgr, image_format="BGR")
        result = predictor.segment(request)
    except (ValueError, TritonServerError) as error:  # bad input; the Triton server went away or refused a request
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result_to_json(result), indent=2))
    if args.out:
        rgb = np.ascontiguousarray(bgr[..., ::-1])
        caption = args.text or request.task.value
        overlay = draw_overlay(rgb, result.instances, caption=caption)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(args.out, overlay[..., ::-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
