"""Tokenizer set-up and X-SAM's chunk-wise prompt encoding (spec section 3)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from .prompts import IMAGE_PLACEHOLDER, PHRASE_END, PHRASE_START, REGION_PLACEHOLDER, SEG_TOKEN, SPECIAL_TOKENS, STOP_WORD

# Placeholder ids (xtuner constants): never vocabulary ids, replaced by embeddings when splicing.
IMAGE_TOKEN_INDEX = -200
REGION_TOKEN_INDEX = -300

_PLACEHOLDER_PATTERN = re.compile(f"({re.escape(IMAGE_PLACEHOLDER)}|{re.escape(REGION_PLACEHOLDER)})")


@dataclass(frozen=True)
class SpecialTokenIds:
    """Ids of X-SAM's added tokens and of the tokens that stop generation."""

    seg: int
    phrase_start: int
    phrase_end: int
    stop_ids: tuple[int, ...]
    bos: int | None


def add_xsam_tokens(tokenizer: PreTrainedTokenizerBase) -> SpecialTokenIds:
    """Add `<SEG>`, `<p>`, `</p>` (in that order, as special tokens) unless present; return their ids."""
    missing = [token for token in SPECIAL_TOKENS if token not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    vocab = tokenizer.get_vocab()
    stop_ids = [vocab[STOP_WORD]] if STOP_WORD in vocab else []
    if tokenizer.eos_token_id is not None:
        stop_ids.append(tokenizer.eos_token_id)
    return SpecialTokenIds(
        seg=vocab[SEG_TOKEN],
        phrase_start=vocab[PHRASE_START],
        phrase_end=vocab[PHRASE_END],
        stop_ids=tuple(dict.fromkeys(stop_ids)),
        bos=tokenizer.bos_token_id,
    )


def encode_with_placeholders(tokenizer: PreTrainedTokenizerBase, text: str, add_bos: bool = False) -> list[int]:
    """Encode text chunk by chunk around `<image>` / `<region>` (which become -200 / -300).

    Each text chunk is encoded separately without special tokens, as the official `encode_fn`
    does; one-shot encoding would change SentencePiece's prefix spaces and thus the ids.
    """
    ids: list[int] = [tokenizer.bos_token_id] if add_bos and tokenizer.bos_token_id is not None else []
    for chunk in _PLACEHOLDER_PATTERN.split(text):
        if chunk == IMAGE_PLACEHOLDER:
            ids.append(IMAGE_TOKEN_INDEX)
        elif chunk == REGION_PLACEHOLDER:
            ids.append(REGION_TOKEN_INDEX)
        elif chunk:
            ids.extend(tokenizer.encode(chunk, add_special_tokens=False))
    return ids


def clean_generated_text(text: str, keep_phrase_tags: bool) -> str:
    """The demo's cleanup: drop the stop word, tidy `<p>` spacing, optionally drop the tags."""
    text = text.replace(STOP_WORD, "").replace(f"{PHRASE_START} ", PHRASE_START).replace(f"{PHRASE_END} ", PHRASE_END)
    text = text.replace(f" {PHRASE_END}", PHRASE_END)
    if not keep_phrase_tags:
        text = text.replace(PHRASE_START, "").replace(PHRASE_END, "")
    return " ".join(text.split())


def gcg_caption(text: str) -> str:
    """X-SAM's `get_gcg_caption`: the caption without the <SEG> sentence and without tags."""
    if SEG_TOKEN not in text:
        return ""
    parts = [part for part in text.split(".") if SEG_TOKEN not in part]
    caption = ". ".join(parts)
    caption = re.sub(r"<[^>]*>", "", caption)
    caption = " ".join(caption.split()).strip().strip("\"'")
    return caption
