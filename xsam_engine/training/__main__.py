"""Command line: `python -m xsam_engine.training [--steps N] [--output runs/tabletop] [--export DIR]`."""

from __future__ import annotations

import argparse
import dataclasses
import logging

from .trainer import TrainingConfig, train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the tabletop X-SAM demo model (resumes if interrupted).")
    defaults = TrainingConfig()
    for field in dataclasses.fields(TrainingConfig):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(getattr(defaults, field.name)),
                            default=getattr(defaults, field.name))
    parser.add_argument("--export", default=None, help="where to write the trained model (default OUTPUT_DIR/model)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingConfig)}
    train(TrainingConfig(**values), export_dir=args.export)


if __name__ == "__main__":
    main()
