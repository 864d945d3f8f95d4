"""Natural robot commands -> segmentation requests.

A robot operator says "grasp the red cup", not "Please segment <p>red cup</p>". The rules, in
order (first match wins):

1. ``ins: cup, bowl; sem: table`` (X-SAM demo syntax) -> generic: INSTANCE (only ``ins``),
   SEMANTIC (only ``sem``) or PANOPTIC (both; ``sem`` classes are stuff).
2. "describe the scene", "what do you see", "caption ..." -> GCG.
3. "segment everything", "segment all objects", "segment the scene" -> PANOPTIC over the
   caller's default vocabulary.
4. "find all cups and bowls", "segment every mug" -> OPEN_VOCABULARY with those classes.
5. An action verb ("grasp", "pick up", "find", "get", "segment", "show me", "where is", ...)
   followed by a noun phrase -> REFERRING with the phrase, articles dropped ("red cup");
   if the phrase describes a need or function ("something to drink from") -> REASONING with
   the whole sentence.
6. A sentence about a need ("I am thirsty", "which one can hold soup?") -> REASONING.
7. Anything else of at most eight words -> REFERRING with the phrase itself.

Every rule matches whole words and word sequences, never parts of a word: "how" does not
match "show", "what" does not match "whatnot", "ins:" does not match "coins:". ``words``
splits a command into lower-case words (letters and digits, with inner apostrophes: "i'm",
"where's"); ``contains_words`` finds a word sequence in it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .requests import SegmentationRequest, Task

ACTION_VERBS = (
    "please", "grasp", "grab", "pick up", "pick", "take", "get", "fetch", "bring me", "bring", "hand me", "give me",
    "find", "locate", "segment", "show me", "show", "point to", "point at", "look at", "highlight", "move", "push",
    "touch", "track", "follow", "where is", "where's", "mask", "select", "can you", "could you", "i want", "i need",
)
ARTICLES = ("the", "a", "an", "that", "this", "my", "your")
REASONING_MARKERS = (
    "something", "anything", "thing that", "thing i", "one that", "object that", "which", "what", "why", "how",
    "i am", "i'm", "i'd", "to drink", "to eat", "to hold", "to store", "to carry", "to play", "to put", "used for",
    "can be used", "suitable", "thirsty", "hungry",
)
# Word sequences that make a command continuous (tracking) when it starts with one of them.
TRACKING_STARTS = ("track", "follow", "keep tracking", "keep following")
GCG_PATTERNS = (r"^describe\b", r"\bwhat do you see\b", r"^caption\b", r"\bdescribe the (scene|image|table)\b")
EVERYTHING_PATTERN = re.compile(r"^(segment|find|show|detect|label)\s+(everything|all objects|all the objects|the scene|the image|all)$")
ALL_OF_PATTERN = re.compile(r"^(?:segment|find|show|detect|show me|highlight|get)\s+(?:all|every|each)\s+(?:the\s+)?(.+)$")
MAX_REFERRING_WORDS = 8


def singular(word: str) -> str:
    """English plural -> singular for the simple cases class names need ("boxes" -> "box")."""
    if len(word) > 3 and word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("xes", "ches", "shes", "sses")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and len(word) > 2:
        return word[:-1]
    return word


_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def words(text: str) -> tuple[str, ...]:
    """Lower-case words of ``text``: runs of letters / digits, inner apostrophes kept ("i'm")."""
    return tuple(_WORD.findall(text.lower().replace("\u2019", "'")))


def contains_words(text_words: Sequence[str], phrase: str) -> bool:
    """True when the words of ``phrase`` occur in ``text_words`` consecutively (whole words only)."""
    wanted = words(phrase)
    size = len(wanted)
    if size == 0:
        return False
    return any(tuple(text_words[start : start + size]) == wanted for start in range(len(text_words) - size + 1))


def starts_with_words(text_words: Sequence[str], phrase: str) -> bool:
    """True when ``text_words`` begins with the words of ``phrase``."""
    wanted = words(phrase)
    return bool(wanted) and tuple(text_words[: len(wanted)]) == wanted


def is_tracking_command(text: str) -> bool:
    """True for commands that ask to follow an object over frames ("track the red cup", "Follow the mug")."""
    text_words = words(text)
    return any(starts_with_words(text_words, start) for start in TRACKING_STARTS)


def _normalise(text: str) -> str:
    text = " ".join(text.replace("\n", " ").split()).strip()
    return text.rstrip(".!?").strip()


def _strip_prefixes(phrase: str, prefixes: Sequence[str]) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            if phrase == prefix:
                return ""
            if phrase.startswith(prefix + " "):
                phrase = phrase[len(prefix) + 1 :].strip()
                changed = True
    return phrase


def _class_list(text: str) -> tuple[str, ...]:
    parts = re.split(r",|\band\b|\bor\b", text)
    return tuple(dict.fromkeys(singular(p.strip()) for p in parts if p.strip()))


def parse_command(
    text: str, default_vocabulary: Sequence[str] = (), stuff_vocabulary: Sequence[str] = ()
) -> SegmentationRequest:
    """Map a natural command to a request (rules in the module docstring).

    Raises ValueError for an empty command or when "segment everything" is asked without a
    default vocabulary.
    """
    original = _normalise(text)
    if not original:
        raise ValueError("The command is empty; say what to segment, e.g. 'grasp the red cup'.")
    lowered = original.lower()

    generic = _parse_demo_syntax(lowered)
    if generic is not None:
        return generic
    if any(re.search(pattern, lowered) for pattern in GCG_PATTERNS):
        return SegmentationRequest(Task.GCG, text=original)
    if EVERYTHING_PATTERN.match(lowered):
        if not default_vocabulary:
            raise ValueError("'Segment everything' needs a default vocabulary of class names.")
        return SegmentationRequest(
            Task.PANOPTIC, vocabulary=tuple(default_vocabulary), stuff_vocabulary=tuple(stuff_vocabulary)
        )
    match = ALL_OF_PATTERN.match(lowered)
    if match:
        return SegmentationRequest(Task.OPEN_VOCABULARY, vocabulary=_class_list(match.group(1)))

    phrase = _strip_prefixes(lowered, ACTION_VERBS)
    phrase = _strip_prefixes(phrase, ARTICLES)
    if not phrase:
        raise ValueError(f"The command {original!r} names no object; say which, e.g. 'grasp the red cup'.")
    lowered_words = words(lowered)
    if any(contains_words(lowered_words, marker) for marker in REASONING_MARKERS):
        return SegmentationRequest(Task.REASONING, text=original)
    if len(phrase.split()) > MAX_REFERRING_WORDS:
        return SegmentationRequest(Task.REASONING, text=original)
    return SegmentationRequest(Task.REFERRING, text=phrase)


def _parse_demo_syntax(lowered: str) -> SegmentationRequest | None:
    # "ins:" / "sem:" as whole words ("coins: ..." is not the demo syntax).
    things = re.search(r"(?<![^\W_])ins:\s*([^;\n]+)", lowered)
    stuff = re.search(r"(?<![^\W_])sem:\s*([^;\n]+)", lowered)
    if not things and not stuff:
        return None
    thing_names = tuple(n.strip() for n in things.group(1).split(",") if n.strip()) if things else ()
    stuff_names = tuple(n.strip() for n in stuff.group(1).split(",") if n.strip()) if stuff else ()
    if thing_names and stuff_names:
        return SegmentationRequest(Task.PANOPTIC, vocabulary=thing_names + stuff_names, stuff_vocabulary=stuff_names)
    if thing_names:
        return SegmentationRequest(Task.INSTANCE, vocabulary=thing_names)
    return SegmentationRequest(Task.SEMANTIC, vocabulary=stuff_names)
