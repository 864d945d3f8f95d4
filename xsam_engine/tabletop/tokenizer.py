"""A word-level tokenizer for exactly the language of the tabletop data and X-SAM's templates.

The vocabulary is collected programmatically from ``xsam_engine.prompts`` (every template and
chat string) and from the tabletop language (referring grammar, reasoning sentences, captions,
class, colour and table words), plus punctuation, digits and the Phi-3 chat special tokens.
Words outside it map to ``<unk>``. X-SAM's ``<SEG>``, ``<p>`` and ``</p>`` are *not* included:
the model adds them with ``tokenizer.add_tokens([...], special_tokens=True)``, as the official
code does. Added tokens are matched before pre-tokenization, so "<p>red" splits into "<p>", "red".

No BOS is added by ``encode``: callers prepend ``bos_token_id`` themselves where X-SAM does.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from .. import prompts
from .backgrounds import TABLE_STYLES
from .captions import caption_strings
from .catalog import ALL_CLASSES, COLOURS
from .language import LEXICON
from .reasoning import reasoning_strings

UNK_TOKEN = "<unk>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<pad>"
CHAT_TOKENS: tuple[str, ...] = ("<|user|>", "<|assistant|>", "<|end|>", "<|system|>")
BASE_SPECIAL_TOKENS: tuple[str, ...] = (UNK_TOKEN, BOS_TOKEN, "</s>", PAD_TOKEN, EOS_TOKEN, *CHAT_TOKENS)
"""Special tokens of the base vocabulary, in id order (``<unk>`` = 0, ``<s>`` = 1, ``</s>`` = 2)."""

# Strings that are never words: chat markers, X-SAM's added tokens and placeholders.
_NON_WORDS = (*BASE_SPECIAL_TOKENS, *prompts.SPECIAL_TOKENS, prompts.IMAGE_PLACEHOLDER, prompts.REGION_PLACEHOLDER)
_EXTRA_WORDS = ("image", "region", "table", "objects", "object")


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The tabletop tokenizer (a few hundred entries), ready for ``save_pretrained``."""
    backend = Tokenizer(models.WordLevel(vocab={}, unk_token=UNK_TOKEN))
    backend.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents(), normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated"), pre_tokenizers.Digits(True)]
    )
    words = sorted(_corpus_words(backend, corpus_strings()))
    vocab = {token: index for index, token in enumerate(BASE_SPECIAL_TOKENS)}
    for word in words:
        vocab.setdefault(word, len(vocab))
    backend.model = models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN)
    # No decoder: the tokenizers library then joins tokens with single spaces, which is what a
    # word-level vocabulary needs ("sure , it is <SEG> ." is tidied by clean_up_tokenization_spaces).
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in BASE_SPECIAL_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens=list(CHAT_TOKENS),
        padding_side="right",
        clean_up_tokenization_spaces=True,
        model_max_length=4096,
    )


def corpus_strings() -> tuple[str, ...]:
    """Every string whose words the tokenizer must know."""
    strings: list[str] = []
    for name in dir(prompts):
        value = getattr(prompts, name)
        if name.isupper() and isinstance(value, str):
            strings.append(value)
        elif name.isupper() and isinstance(value, tuple) and all(isinstance(v, str) for v in value):
            strings.extend(value)
    strings += list(LEXICON) + list(reasoning_strings()) + list(caption_strings())
    strings += list(ALL_CLASSES) + list(COLOURS) + list(TABLE_STYLES) + list(_EXTRA_WORDS)
    strings += list(string.punctuation) + list(string.digits)
    return tuple(strings)


def _corpus_words(backend: Tokenizer, strings: Iterable[str]) -> set[str]:
    words: set[str] = set()
    for text in strings:
        text = _strip_placeholders(text)
        normalised = backend.normalizer.normalize_str(text)
        words.update(piece for piece, _ in backend.pre_tokenizer.pre_tokenize_str(normalised))
    return words


def _strip_placeholders(text: str) -> str:
    for token in _NON_WORDS:
        text = text.replace(token, " ")
    # Template slots such as {phrase} are filled by other strings of the corpus.
    while "{" in text and "}" in text[text.index("{") :]:
        start = text.index("{")
        text = text[:start] + " " + text[text.index("}", start) + 1 :]
    return text
