"""Reasoning sentences: a need or a function ("something I can drink from") instead of a name.

Each ``Affordance`` lists the classes that satisfy it and sentence templates with one slot:
``{something}`` -> "something" / "something red", ``{the_thing}`` -> "the thing" / "the red object",
``{which}`` -> "which object" / "which red object" / "what". A colour is added only when the
sentence would otherwise fit several objects. ``resolve_reasoning`` reads a sentence back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .catalog import COLOURS
from .language import normalise_text
from .scenes import Scene


@dataclass(frozen=True)
class Affordance:
    """A function objects can serve.

    Attributes:
        key: short name.
        categories: classes that serve it.
        sentences: templates with one slot ({something}, {the_thing} or {which}).
        explanation: verb phrase for the answer, "The red mug {explanation}."
    """

    key: str
    categories: tuple[str, ...]
    sentences: tuple[str, ...]
    explanation: str


AFFORDANCES: tuple[Affordance, ...] = (
    Affordance(
        "drink",
        ("cup", "mug", "can", "bottle"),
        ("{something} I can drink from.", "I am thirsty. {which} can I drink from?", "Show me {the_thing} I could drink from."),
        "holds a drink",
    ),
    Affordance(
        "hot drink",
        ("cup", "mug"),
        ("{something} to drink hot coffee from.", "I want some tea. {which} should I pour it into?",
         "{the_thing} that holds a hot drink."),
        "is made for hot drinks",
    ),
    Affordance(
        "soup",
        ("bowl",),
        ("{the_thing} I would serve soup in.", "{something} to eat cereal from.", "{which} would hold my soup?"),
        "can hold soup",
    ),
    Affordance(
        "roll",
        ("ball",),
        ("{something} I can roll across the table.", "{which} could a child throw and catch?", "{the_thing} that bounces."),
        "is round and rolls",
    ),
    Affordance(
        "food",
        ("plate",),
        ("{something} to serve a meal on.", "{which} should I put my sandwich on?", "{the_thing} for serving food."),
        "is meant for food",
    ),
    Affordance(
        "store",
        ("box",),
        ("{something} I can store small things in.", "{which} could I pack my toys into?",
         "{the_thing} that keeps items inside."),
        "can store things",
    ),
    Affordance(
        "pour",
        ("bottle",),
        ("{something} I can pour water from.", "{which} has a cap I can screw off?", "{the_thing} that holds water for later."),
        "has a cap and holds water",
    ),
    Affordance(
        "soda",
        ("can",),
        ("{something} that holds soda.", "{which} has a pull tab?", "{the_thing} made of metal that I can drink from."),
        "is a metal can for soda",
    ),
)

_COLOUR = "|".join(COLOURS)
_SLOT_FILLERS = {
    "something": (r"something(?: (?P<colour>{c}))?", ("something", "something {colour}")),
    "the_thing": (
        r"the(?: (?P<colour>{c}))? (?:thing|object)",
        ("the thing", "the {colour} thing", "the object", "the {colour} object"),
    ),
    "which": (r"(?:which(?: (?P<colour>{c}))? object|what)", ("which object", "which {colour} object", "what")),
}
_SLOT = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class ReasoningQuery:
    """A generated reasoning sentence, the affordance it uses and a one-sentence explanation."""

    sentence: str
    affordance: str
    explanation: str


def _template_pattern(template: str) -> re.Pattern[str]:
    slot = _SLOT.search(template)
    if slot is None:
        raise ValueError(f"Reasoning template {template!r} needs one slot.")
    before, after = normalise_text(template[: slot.start()]), normalise_text(template[slot.end() :])
    body = _SLOT_FILLERS[slot.group(1)][0].format(c=_COLOUR)
    parts = [re.escape(before)] if before else []
    parts.append(body)
    if after:
        parts.append(re.escape(after))
    return re.compile("^" + " ".join(parts) + "$")


_PATTERNS = [(affordance, _template_pattern(t)) for affordance in AFFORDANCES for t in affordance.sentences]


def resolve_reasoning(scene: Scene, text: str) -> list[int]:
    """Instance ids (ascending) of the objects a reasoning sentence can mean; [] if it does not parse."""
    normalised = normalise_text(text)
    for affordance, pattern in _PATTERNS:
        match = pattern.match(normalised)
        if match:
            colour = match.group("colour")
            return [
                obj.instance_id
                for obj in scene.objects
                if obj.category in affordance.categories and (colour is None or obj.colour == colour)
            ]
    return []


def sample_reasoning(scene: Scene, instance_id: int, rng: np.random.Generator) -> ReasoningQuery | None:
    """A sentence that describes a need only object ``instance_id`` meets; None when there is none."""
    target = scene.object(instance_id)
    options: list[tuple[Affordance, str | None]] = []
    for affordance in AFFORDANCES:
        if target.category not in affordance.categories:
            continue
        for colour in (None, target.colour):
            fitting = [
                obj.instance_id
                for obj in scene.objects
                if obj.category in affordance.categories and (colour is None or obj.colour == colour)
            ]
            if fitting == [instance_id]:
                options.append((affordance, colour))
                break  # no colour when none is needed
    if not options:
        return None
    affordance, colour = options[int(rng.integers(len(options)))]
    template = affordance.sentences[int(rng.integers(len(affordance.sentences)))]
    slot = _SLOT.search(template)
    fillers = [f for f in _SLOT_FILLERS[slot.group(1)][1] if ("{colour}" in f) == (colour is not None)]
    filler = fillers[int(rng.integers(len(fillers)))].format(colour=colour)
    before = template[: slot.start()]
    if not before.strip() or before.rstrip().endswith((".", "?")):
        filler = filler[0].upper() + filler[1:]  # the slot starts a sentence
    sentence = before + filler + template[slot.end() :]
    explanation = f"The {target.colour} {target.category} {affordance.explanation}."
    return ReasoningQuery(sentence, affordance.key, explanation)


def reasoning_strings() -> tuple[str, ...]:
    """Every template, filler and explanation word source (for building the tokenizer)."""
    strings: list[str] = []
    for affordance in AFFORDANCES:
        strings += [*affordance.sentences, affordance.explanation, "The", "It is"]
    for _, fillers in _SLOT_FILLERS.values():
        strings += list(fillers)
    return tuple(strings)
