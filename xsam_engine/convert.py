"""Convert the released X-SAM checkpoint into this package's model format.

    python -m xsam_engine.convert --checkpoint .../pytorch_model.bin --tokenizer ./Phi-3-mini-4k-instruct \\
        --out models/x-sam [--dtype bfloat16]

The release is one `torch.save`d state dict (`s3_mixed_finetune/.../pytorch_model.bin` in
`hao9610/X-SAM`); the tokenizer is the stock Phi-3-mini-4k-instruct tokenizer, to which X-SAM's
`<SEG>`, `<p>`, `</p>` are added. The output directory (`model.safetensors`, `config.json`,
tokenizer files) loads with `XSamPredictor.from_pretrained(out)` and the node's `model_path`.
"""

from __future__ import annotations

import argparse
import logging

import torch

from .checkpoint import load_official, save_pretrained


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Convert the released X-SAM checkpoint to safetensors + config.")
    parser.add_argument("--checkpoint", required=True, help="released pytorch_model.bin (or a .safetensors copy)")
    parser.add_argument("--tokenizer", required=True, help="directory with the Phi-3-mini-4k-instruct tokenizer")
    parser.add_argument("--out", required=True, help="output model directory")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--non-strict", action="store_true", help="report missing/unexpected keys instead of failing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    dtype = getattr(torch, args.dtype)
    model, tokenizer, report = load_official(args.checkpoint, args.tokenizer, dtype=dtype, strict=not args.non_strict)
    print(f"loaded {report.loaded} tensors; skipped {len(report.unused)} unused release keys; "
          f"missing {len(report.missing)}, unexpected {len(report.unexpected)}")
    save_pretrained(model, tokenizer, args.out, metadata={"source": str(args.checkpoint), "converted_from": "X-SAM release"})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
