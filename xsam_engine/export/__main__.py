"""Command line: export X-SAM's image stages as ONNX graphs or as a Triton model repository.

    python -m xsam_engine.export [--model DIR] --onnx DIR
    python -m xsam_engine.export [--model DIR] --triton-repository DIR [--triton-platform onnxruntime_onnx]
        [--max-batch-size 8] [--max-queue-delay-us 500] [--instances 1] [--instance-kind gpu]

`--model` defaults to the shipped tabletop model. See docs/acceleration.md (ONNX) and
docs/fleet.md (Triton).
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..triton.repository import INSTANCE_KINDS, PLATFORMS, RepositoryOptions


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m xsam_engine.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model directory (default: the shipped tabletop demo model)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--onnx", metavar="DIR", help="write the five batch-1 ONNX graphs + manifest.json here")
    target.add_argument("--triton-repository", metavar="DIR", help="write a Triton model repository here")
    defaults = RepositoryOptions()
    parser.add_argument("--triton-platform", choices=PLATFORMS, default=defaults.platform,
                        help="onnxruntime_onnx (Triton's ONNX Runtime backend), tensorrt_plan (then run "
                             "DIR/build_plans.sh on the server's GPU), python (ONNX Runtime in the Python backend)")
    parser.add_argument("--max-batch-size", type=int, default=defaults.max_batch_size,
                        help="largest batch Triton's dynamic batcher forms (cameras sharing a model)")
    parser.add_argument("--max-queue-delay-us", type=int, default=defaults.max_queue_delay_us,
                        help="how long the batcher may wait to fill a batch, microseconds")
    parser.add_argument("--instances", type=int, default=defaults.instance_count, help="model instances per GPU / on the CPU")
    parser.add_argument("--instance-kind", choices=INSTANCE_KINDS, default=defaults.instance_kind)
    parser.add_argument("--python-threads", type=int, default=defaults.python_threads,
                        help="python platform: ONNX Runtime intra-op threads per instance (0 = its default)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        options = RepositoryOptions(
            platform=args.triton_platform, max_batch_size=args.max_batch_size, max_queue_delay_us=args.max_queue_delay_us,
            instance_count=args.instances, instance_kind=args.instance_kind, python_threads=args.python_threads,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    import torch

    from ..checkpoint import load_pretrained

    try:
        model, _ = load_pretrained(args.model, device="cpu", dtype=torch.float32)
    except (OSError, ValueError) as error:  # not a model directory, a damaged or foreign checkpoint
        print(f"error: --model {args.model}: {error}", file=sys.stderr)
        return 1
    target = args.onnx or args.triton_repository
    try:
        if args.onnx:
            from .onnx_export import export_onnx

            export_onnx(model, args.onnx)
            print(f"wrote the ONNX graphs to {args.onnx}")
            return 0
        from ..triton.repository import write_triton_repository

        folders = write_triton_repository(model, args.triton_repository, options)
    except OSError as error:  # the target cannot be created or written (permissions, a file in the way, disk full)
        print(f"error: cannot write {target}: {error}", file=sys.stderr)
        return 1
    print(f"wrote {len(folders)} Triton models ({options.platform}) to {args.triton_repository}: {', '.join(folders)}")
    if options.platform == "tensorrt_plan":
        print(f"build the TensorRT plans on the server's GPU: {args.triton_repository}/build_plans.sh")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
