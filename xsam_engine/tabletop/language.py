"""Referring expressions for tabletop scenes: a small grammar, its resolver and its generator.

Grammar (lower case; punctuation ignored)::

    expression := [article] [superlative | extreme] noun [position | relation reference]
    noun       := [colour] category
    reference  := [article] [colour] category
    article    := "the" | "a" | "an"
    superlative:= "biggest" | "largest" | "smallest"
    extreme    := "leftmost" | "rightmost"
    position   := "on the left" | "on the right" | "at the top" | "at the bottom"
    relation   := "left of" | "to the left of" | "right of" | "to the right of"
                | "next to" | "near" | "above" | "below"

Examples: "red cup", "the blue bowl", "cup" (when only one cup), "the cup on the right",
"the biggest ball", "the leftmost box", "the cup left of the bottle", "the green mug next to the plate".

Meaning (image-based, from the objects' visible-mask centres ``centre_xy`` and unoccluded areas):
- noun: objects of that category (and colour, when given).
- superlative: the candidates whose area is within a factor 1.2 of the largest (smallest) one.
- extreme / position: the candidates whose centre is within 6 % of the image width (height) of the
  leftmost / rightmost (topmost / bottommost) candidate.
- relation: the reference must resolve to exactly one object; "left of" keeps candidates whose
  centre is more than 6 % of the width left of the reference's, likewise right / above / below;
  "next to" / "near" keeps candidates whose centre distance is below 1.4 x the sum of both
  equivalent radii sqrt(area / pi).
An expression refers to one object when ``resolve_expression`` returns exactly one id. The
generator only emits expressions that stay unique under a lenient reading too (double margins),
so no emitted expression is borderline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .catalog import CLASSES, COLOURS
from .scenes import Scene, SceneObject

ARTICLES: tuple[str, ...] = ("the", "a", "an")
SUPERLATIVES: dict[str, str] = {"biggest": "big", "largest": "big", "smallest": "small"}
EXTREMES: dict[str, str] = {"leftmost": "left", "rightmost": "right"}
POSITIONS: dict[str, str] = {"on the left": "left", "on the right": "right", "at the top": "top", "at the bottom": "bottom"}
RELATIONS: dict[str, str] = {
    "left of": "left",
    "to the left of": "left",
    "right of": "right",
    "to the right of": "right",
    "next to": "near",
    "near": "near",
    "above": "above",
    "below": "below",
}



@dataclass(frozen=True)
class _Reading:
    """Thresholds of one reading of the grammar (margins are fractions of the image size)."""

    position_margin: float
    relation_margin: float
    size_ratio: float
    near_factor: float


_NORMAL = _Reading(position_margin=0.06, relation_margin=0.06, size_ratio=1.2, near_factor=1.4)
# The generator re-checks uniqueness with this wider reading, so nothing it emits is borderline.
_LENIENT = _Reading(position_margin=0.12, relation_margin=0.0, size_ratio=1.35, near_factor=1.8)


def normalise_text(text: str) -> str:
    """Lower case, punctuation to spaces, single spaces: the form the resolvers parse."""
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", text.lower()).split())


@dataclass(frozen=True)
class NounPhrase:
    """[colour] category."""

    category: str
    colour: str | None = None

    def text(self) -> str:
        return f"{self.colour} {self.category}" if self.colour else self.category

    def matches(self, obj: SceneObject) -> bool:
        return obj.category == self.category and (self.colour is None or obj.colour == self.colour)


@dataclass(frozen=True)
class ReferringExpression:
    """A parsed expression; ``text()`` renders it back.

    Attributes:
        noun: what is referred to.
        article: "", "the", "a" or "an".
        superlative: key of ``SUPERLATIVES`` or None.
        position: word(s) of ``EXTREMES`` (before the noun) or ``POSITIONS`` (after it), or None.
        relation: key of ``RELATIONS`` or None; then ``reference`` is set.
        reference: the object the relation is relative to.
    """

    noun: NounPhrase
    article: str = ""
    superlative: str | None = None
    position: str | None = None
    relation: str | None = None
    reference: NounPhrase | None = None

    def text(self) -> str:
        words = [self.article] if self.article else []
        if self.superlative:
            words.append(self.superlative)
        if self.position in EXTREMES:
            words.append(self.position)
        words.append(self.noun.text())
        if self.position in POSITIONS:
            words.append(self.position)
        if self.relation and self.reference:
            words += [self.relation, "the", self.reference.text()]
        return " ".join(words)


def _alternation(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_COLOUR = _alternation(COLOURS)
_CATEGORY = _alternation(CLASSES)
_ARTICLE = _alternation(ARTICLES)
_EXPRESSION = re.compile(
    rf"^(?:(?P<article>{_ARTICLE}) )?"
    rf"(?:(?P<superlative>{_alternation(SUPERLATIVES)}) |(?P<extreme>{_alternation(EXTREMES)}) )?"
    rf"(?:(?P<colour>{_COLOUR}) )?(?P<category>{_CATEGORY})"
    rf"(?: (?P<position>{_alternation(POSITIONS)})"
    rf"| (?P<relation>{_alternation(RELATIONS)}) (?:(?:{_ARTICLE}) )?(?:(?P<ref_colour>{_COLOUR}) )?(?P<ref_category>{_CATEGORY}))?$"
)


def parse_expression(text: str) -> ReferringExpression | None:
    """Parse ``text`` with the grammar above; None when it is not a referring expression."""
    match = _EXPRESSION.match(normalise_text(text))
    if match is None:
        return None
    groups = match.groupdict()
    reference = None
    if groups["relation"]:
        reference = NounPhrase(groups["ref_category"], groups["ref_colour"])
    return ReferringExpression(
        noun=NounPhrase(groups["category"], groups["colour"]),
        article=groups["article"] or "",
        superlative=groups["superlative"],
        position=groups["extreme"] or groups["position"],
        relation=groups["relation"],
        reference=reference,
    )


def resolve_expression(scene: Scene, text: str) -> list[int]:
    """Instance ids (ascending) of the objects ``text`` can refer to; [] if it does not parse."""
    expression = parse_expression(text)
    if expression is None:
        return []
    return [obj.instance_id for obj in _resolve(scene, expression, _NORMAL)]


def _resolve(scene: Scene, expression: ReferringExpression, reading: _Reading) -> list[SceneObject]:
    candidates = [obj for obj in scene.objects if expression.noun.matches(obj)]
    if expression.superlative:
        candidates = _by_size(candidates, SUPERLATIVES[expression.superlative], reading.size_ratio)
    if expression.position:
        side = EXTREMES.get(expression.position) or POSITIONS[expression.position]
        candidates = _by_extreme(candidates, side, scene, reading.position_margin)
    if expression.relation and expression.reference:
        references = [obj for obj in scene.objects if expression.reference.matches(obj)]
        if len(references) != 1:
            return []
        reference = references[0]
        relation = RELATIONS[expression.relation]
        candidates = [
            obj
            for obj in candidates
            if obj.instance_id != reference.instance_id and _related(obj, reference, relation, scene, reading)
        ]
    return candidates


def _by_size(candidates: list[SceneObject], which: str, ratio: float) -> list[SceneObject]:
    if not candidates:
        return []
    areas = np.array([obj.full_area for obj in candidates], dtype=np.float64)
    keep = areas >= areas.max() / ratio if which == "big" else areas <= areas.min() * ratio
    return [obj for obj, kept in zip(candidates, keep) if kept]


def _by_extreme(candidates: list[SceneObject], side: str, scene: Scene, margin: float) -> list[SceneObject]:
    if not candidates:
        return []
    axis = 0 if side in ("left", "right") else 1
    sign = -1.0 if side in ("left", "top") else 1.0  # maximise sign * coordinate
    extent = scene.width if axis == 0 else scene.height
    values = np.array([sign * obj.centre_xy[axis] for obj in candidates])
    return [obj for obj, value in zip(candidates, values) if value >= values.max() - margin * extent]


def _related(obj: SceneObject, reference: SceneObject, relation: str, scene: Scene, reading: _Reading) -> bool:
    dx = obj.centre_xy[0] - reference.centre_xy[0]
    dy = obj.centre_xy[1] - reference.centre_xy[1]
    margin_x = reading.relation_margin * scene.width
    margin_y = reading.relation_margin * scene.height
    if relation == "left":
        return dx < -margin_x
    if relation == "right":
        return dx > margin_x
    if relation == "above":
        return dy < -margin_y
    if relation == "below":
        return dy > margin_y
    radii = np.sqrt(obj.full_area / np.pi) + np.sqrt(reference.full_area / np.pi)
    return float(np.hypot(dx, dy)) < reading.near_factor * radii


def are_near(scene: Scene, first: int, second: int) -> bool:
    """Whether two objects are "next to" each other in the normal reading of the grammar."""
    return _related(scene.object(first), scene.object(second), "near", scene, _NORMAL)


# ---------------------------------------------------------------------------------------------
# Generation


@dataclass(frozen=True)
class ExpressionChoice:
    """A generated expression and the kind of cue it uses ("plain", "category", "superlative",
    "position", "relation")."""

    text: str
    kind: str


def unique_expressions(scene: Scene, instance_id: int) -> list[ExpressionChoice]:
    """Every expression of the grammar (canonical wording, article "the") that refers to exactly
    ``instance_id``, under both the normal and the lenient reading."""
    target = scene.object(instance_id)
    nouns = [NounPhrase(target.category, target.colour), NounPhrase(target.category)]
    same_noun = {noun: [obj for obj in scene.objects if noun.matches(obj)] for noun in nouns}
    choices: list[ExpressionChoice] = []

    def add(expression: ReferringExpression, kind: str) -> None:
        if _refers_only_to(scene, expression, target):
            choices.append(ExpressionChoice(expression.text(), kind))

    add(ReferringExpression(nouns[0]), "plain")
    add(ReferringExpression(nouns[1]), "category")
    for noun in nouns:
        if len(same_noun[noun]) < 2:
            continue  # "the biggest cup" for the only cup is odd, though true
        for superlative in ("biggest", "smallest"):
            add(ReferringExpression(noun, "the", superlative=superlative), "superlative")
        for position in ("leftmost", "rightmost", "on the left", "on the right", "at the top", "at the bottom"):
            add(ReferringExpression(noun, "the", position=position), "position")
    for other in scene.objects:
        if other.instance_id == instance_id:
            continue
        reference = _shortest_unique_noun(scene, other)
        if reference is None:
            continue
        for relation in ("left of", "right of", "above", "below", "next to"):
            for noun in nouns:
                add(ReferringExpression(noun, "the", relation=relation, reference=reference), "relation")
    return choices


def sample_referring_expression(scene: Scene, instance_id: int, rng: np.random.Generator) -> str | None:
    """A random unique expression for the object, favouring bare "colour category" phrases
    (what robot commands reduce to); None when the object cannot be singled out."""
    choices = unique_expressions(scene, instance_id)
    if not choices:
        return None
    by_kind: dict[str, list[ExpressionChoice]] = {}
    for choice in choices:
        by_kind.setdefault(choice.kind, []).append(choice)
    weights = {"plain": 6.0, "category": 1.5, "superlative": 1.5, "position": 1.5, "relation": 1.5}
    kinds = sorted(by_kind)
    probabilities = np.array([weights[kind] for kind in kinds])
    kind = kinds[int(rng.choice(len(kinds), p=probabilities / probabilities.sum()))]
    text = by_kind[kind][int(rng.integers(len(by_kind[kind])))].text
    if kind in ("plain", "category"):
        article = rng.choice(["", "the", "a"], p=[0.5, 0.4, 0.1])
        return f"{article} {text}".strip()
    return text


def describe_object(scene: Scene, instance_id: int) -> str | None:
    """The preferred unique description of an object, without article: "colour category" when
    unique, else the category alone, else the shortest superlative, position or relation
    expression ("biggest red ball", "cup on the left"); None when no expression is unique."""
    choices = unique_expressions(scene, instance_id)
    if not choices:
        return None
    order = {"plain": 0, "category": 1, "superlative": 2, "position": 3, "relation": 4}
    best = min(choices, key=lambda c: (order[c.kind], len(c.text)))
    return best.text[len("the ") :] if best.text.startswith("the ") else best.text


def _refers_only_to(scene: Scene, expression: ReferringExpression, target: SceneObject) -> bool:
    for reading in (_NORMAL, _LENIENT):
        resolved = _resolve(scene, expression, reading)
        if [obj.instance_id for obj in resolved] != [target.instance_id]:
            return False
    return True


def _shortest_unique_noun(scene: Scene, obj: SceneObject) -> NounPhrase | None:
    for noun in (NounPhrase(obj.category), NounPhrase(obj.category, obj.colour)):
        if [o.instance_id for o in scene.objects if noun.matches(o)] == [obj.instance_id]:
            return noun
    return None


LEXICON: tuple[str, ...] = (
    *ARTICLES,
    *SUPERLATIVES,
    *EXTREMES,
    *POSITIONS,
    *RELATIONS,
    *COLOURS,
    *CLASSES,
)
"""Every word the referring grammar can emit (for building the tokenizer)."""


def absent_expressions(scene: Scene, rng: np.random.Generator) -> dict[str, str]:
    """Referring expressions of objects that are not in `scene`, one per kind (either may be missing).

    {"absent_class": "green bottle" (a class not in the scene), "absent_colour": "blue cup" (a class
    in the scene, in a colour no object of it has: the harder case)}. Used by the absent-object
    measurement (`evaluation/presence.py`) and as referring negatives in training.
    """
    present = {(obj.category, obj.colour) for obj in scene.objects}
    categories = sorted({category for category, _ in present})
    colours = list(COLOURS)
    expressions = {}
    missing_classes = [name for name in CLASSES if name not in categories]
    if missing_classes:
        expressions["absent_class"] = f"{colours[rng.integers(len(colours))]} {missing_classes[rng.integers(len(missing_classes))]}"
    swaps = [(colour, category) for category in categories for colour in colours if (category, colour) not in present]
    if swaps:
        colour, category = swaps[rng.integers(len(swaps))]
        expressions["absent_colour"] = f"{colour} {category}"
    return expressions
