"""Grounded captions for GCG: short scene descriptions whose noun phrases are <p>..</p> spans."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..prompts import wrap_phrase
from .backgrounds import TABLE_STYLES
from .language import are_near, parse_expression, describe_object
from .scenes import Scene

CAPTION_TEMPLATES: dict[int, tuple[str, ...]] = {
    1: ("{0} on {table}.", "there is {0} on {table}.", "{0} is on {table}."),
    2: ("{0} and {1} on {table}.", "there are {0} and {1} on {table}.", "{0} and {1}.", "{0} next to {1}."),
    3: ("{0}, {1} and {2} on {table}.", "there are {0}, {1} and {2} on {table}.", "{0}, {1} and {2}."),
}
"""Caption templates by number of objects; ``{table}`` is the table phrase."""

MAX_CAPTION_OBJECTS = 3
TABLE_PHRASES: tuple[str, ...] = ("the table", "the {style} table", "a {style} table")


@dataclass(frozen=True)
class Caption:
    """A grounded caption.

    Attributes:
        text: the caption with every grounded phrase wrapped in <p>..</p>, ending with ".".
        phrases: the grounded phrases in order of appearance.
        instance_ids: the object each phrase grounds (0 = the table), same order.
    """

    text: str
    phrases: tuple[str, ...]
    instance_ids: tuple[int, ...]


def sample_caption(scene: Scene, rng: np.random.Generator, deterministic: bool = False) -> Caption | None:
    """Describe the most salient objects (largest visible area first), left to right.

    Training draws 1-3 objects, a template and whether the table is grounded; ``deterministic``
    takes 3 objects (or all there are), the first template and a grounded "the <style> table".
    None when no object can be described uniquely.
    """
    described = [(obj, describe_object(scene, obj.instance_id)) for obj in scene.objects]
    described = [(obj, text) for obj, text in described if text is not None]
    if not described:
        return None
    described.sort(key=lambda item: -item[0].area)
    most = min(MAX_CAPTION_OBJECTS, len(described))
    count = most if deterministic else int(rng.integers(1, most + 1))
    chosen = sorted(described[:count], key=lambda item: item[0].centre_xy[0])
    phrases = [_with_article(text) for _, text in chosen]
    ids = [obj.instance_id for obj, _ in chosen]

    templates = [t for t in CAPTION_TEMPLATES[count] if "next to" not in t or are_near(scene, ids[0], ids[1])]
    template = templates[0] if deterministic else templates[int(rng.integers(len(templates)))]
    slots = [wrap_phrase(p) for p in phrases]
    if "{table}" in template:
        table, grounded = _table_phrase(scene, rng, deterministic)
        if grounded:
            phrases.append(table)
            ids.append(0)
            table = wrap_phrase(table)
        text = template.format(*slots, table=table)
    else:
        text = template.format(*slots)
    return Caption(text, tuple(phrases), tuple(ids))


def _with_article(description: str) -> str:
    """'red cup' -> 'a red cup', 'orange ball' -> 'an orange ball', 'cup on the left' -> 'the cup on the left'."""
    expression = parse_expression(description)
    if expression is None or expression.superlative or expression.position or expression.relation:
        return f"the {description}"
    return f"{'an' if description[0] in 'aeiou' else 'a'} {description}"


def _table_phrase(scene: Scene, rng: np.random.Generator, deterministic: bool) -> tuple[str, bool]:
    style = scene.table_style or "wooden"
    if deterministic:
        return f"the {style} table", True
    template = TABLE_PHRASES[int(rng.integers(len(TABLE_PHRASES)))]
    return template.format(style=style), bool(rng.random() < 0.6)


def caption_strings() -> tuple[str, ...]:
    """Every word source of captions (for building the tokenizer)."""
    strings = [t for templates in CAPTION_TEMPLATES.values() for t in templates]
    strings += [p.format(style=style) for p in TABLE_PHRASES for style in TABLE_STYLES]
    return tuple(strings)

