"""Convert the released X-SAM checkpoint into this package's model format.

    python -m xsam_engine.convert --checkpoint .../pytorch_model.bin --tokenizer ./Phi-3-mini-4k-instruct \\
        --out models/x-sam [--dtype bfloat16] [--config config.json]

The release is one `torch.save`d state dict (`s3_mixed_finetune/.../pytorch_model.bin` in
`hao9610/X-SAM`); the tokenizer is the stock Phi-3-mini-4k-instruct tokenizer, to which X-SAM's
`<SEG>`, `<p>`, `</p>` are added. The configuration defaults to `XSamConfig.released()`;
`--config` reads another one (an `XSamConfig.save` file, or a saved model's `config.json`), e.g.
for a checkpoint trained with the official code at other sizes. The output directory
(`model.safetensors`, `config.json`, tokenizer files) loads with `XSamPredictor.from_pretrained(out)`
and the node's `model_path`.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from .checkpoint import load_official, save_pretrained
from .configuration_xsam import XSamConfig


def read_config(path: str | Path) -> XSamConfig:
    """An `XSamConfig` from JSON: a bare `XSamConfig.save` file or a saved model's `config.json`.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: not JSON, or keys that are not `XSamConfig` fields (the message names them).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No configuration file at {path}; pass a JSON file written by XSamConfig.save.")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not JSON ({error}); pass a file written by XSamConfig.save.") from error
    if isinstance(data, dict) and "format_version" in data and "config" in data:
        data = data["config"]  # a saved model's config.json wraps the XSamConfig
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object of XSamConfig fields.")
    return XSamConfig.from_dict(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Convert the released X-SAM checkpoint to safetensors + config.")
    parser.add_argument("--checkpoint", required=True, help="released pytorch_model.bin (or a .safetensors copy)")
    parser.add_argument("--tokenizer", required=True, help="directory with the Phi-3-mini-4k-instruct tokenizer")
    parser.add_argument("--out", required=True, help="output model directory")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument(
        "--config", default=None,
        help="XSamConfig JSON (XSamConfig.save or a saved model's config.json); default: the released configuration",
    )
    parser.add_argument("--non-strict", action="store_true", help="report missing/unexpected keys instead of failing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    dtype = getattr(torch, args.dtype)
    config = XSamConfig.released() if args.config is None else read_config(args.config)
    model, tokenizer, report = load_official(
        args.checkpoint, args.tokenizer, config=config, dtype=dtype, strict=not args.non_strict
    )
    print(f"loaded {report.loaded} tensors; skipped {len(report.unused)} unused release keys; "
          f"missing {len(report.missing)}, unexpected {len(report.unexpected)}")
    metadata = {"source": str(args.checkpoint), "converted_from": "X-SAM release", "config": args.config or "released"}
    save_pretrained(model, tokenizer, args.out, metadata=metadata)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
