"""The tabletop word-level tokenizer: coverage of the generated language, special tokens, I/O."""

from __future__ import annotations

import re

import numpy as np
import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from xsam_engine.prompts import SPECIAL_TOKENS, chat_prompt
from xsam_engine.requests import Task
from xsam_engine.tabletop import generate_scene, sample_task
from xsam_engine.tabletop.tokenizer import BASE_SPECIAL_TOKENS, build_tokenizer

_WORDS = re.compile(r"<SEG>|</?p>|<\|\w+\|>|[a-z]+|\d|[^\w\s]")


def words(text: str) -> list[str]:
    """The tokenizer's view of text: special tokens kept, words lower-cased, punctuation split."""
    return _WORDS.findall(re.sub(r"[A-Z]", lambda m: m.group().lower(), text).replace("<seg>", "<SEG>"))


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = build_tokenizer()
    tokenizer.add_tokens(list(SPECIAL_TOKENS), special_tokens=True)  # as the model code does
    return tokenizer


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Questions and answers of 200 samples, every task in turn."""
    scenes = [generate_scene(seed) for seed in range(25)]
    rng = np.random.default_rng(0)
    tasks = list(Task)
    result = []
    for index in range(200):
        sample = sample_task(scenes[index % len(scenes)], tasks[index % len(tasks)], rng)
        if sample is not None:
            result += [sample.question, sample.answer]
    return result


def test_vocabulary_is_small_and_starts_with_special_tokens():
    tokenizer = build_tokenizer()
    vocab = tokenizer.get_vocab()
    assert 150 < len(tokenizer) < 400
    assert [vocab[token] for token in BASE_SPECIAL_TOKENS] == list(range(len(BASE_SPECIAL_TOKENS)))
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token, tokenizer.pad_token) == (
        "<s>", "<|endoftext|>", "<unk>", "<pad>",
    )
    assert tokenizer.padding_side == "right"
    assert not set(SPECIAL_TOKENS) & set(vocab), "X-SAM tokens are added by the model code"


def test_generated_language_has_no_unknown_words(tokenizer, texts):
    assert len(texts) >= 300
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.unk_token_id not in ids, (text, tokenizer.convert_ids_to_tokens(ids))
        assert words(tokenizer.decode(ids)) == words(text)


def test_chat_prompt_round_trip(tokenizer, texts):
    prompt = chat_prompt(texts[0]).replace("<image>", "")
    tokens = tokenizer.convert_ids_to_tokens(tokenizer.encode(prompt, add_special_tokens=False))
    assert tokens[0] == "<|user|>" and tokens[-2:] == ["<|end|>", "<|assistant|>"]
    assert "<unk>" not in tokens


@pytest.mark.parametrize("token", [*BASE_SPECIAL_TOKENS, *SPECIAL_TOKENS])
def test_special_tokens_are_single_ids(tokenizer, token):
    ids = tokenizer.encode(f"a {token} cup", add_special_tokens=False)
    assert tokenizer.convert_ids_to_tokens(ids) == ["a", token, "cup"]


def test_phrase_tags_split_from_words(tokenizer):
    tokens = tokenizer.convert_ids_to_tokens(tokenizer.encode("Segment <p>Red cup</p>.<SEG>", add_special_tokens=False))
    assert tokens == ["segment", "<p>", "red", "cup", "</p>", ".", "<SEG>"]


def test_unknown_words_map_to_unk(tokenizer):
    ids = tokenizer.encode("Grab the shiny zebra, 42 times!", add_special_tokens=False)
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens == ["<unk>", "the", "<unk>", "<unk>", ",", "4", "2", "<unk>", "!"]


def test_save_and_load(tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "<|user|>\nPlease segment <p>the blue bowl</p> in this image.<|end|>\n<|assistant|>\nSure, <SEG>."
    assert loaded.encode(text, add_special_tokens=False) == tokenizer.encode(text, add_special_tokens=False)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert (loaded.bos_token, loaded.eos_token, loaded.pad_token, loaded.padding_side) == ("<s>", "<|endoftext|>", "<pad>", "right")
