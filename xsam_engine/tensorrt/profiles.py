"""Optimisation profiles (min / opt / max shapes) for the graphs' dynamic axes, without TensorRT.

Only two axes are dynamic: `num_conditions` of the mask decoder (1 for referring, one per class
for generic segmentation, one per region for VGD; the predictor caps vocabularies at
`MAX_VOCABULARY` = 256) and `num_points` of the region encoder (the sampler always draws
`sampler_num_points`; fewer only in tests). Every other input is static, so its min = opt = max.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..export.graphs import GraphSpec

Shape = tuple[int, ...]
ProfileShapes = dict[str, tuple[Shape, Shape, Shape]]

DEFAULT_MAX_CONDITIONS = 256  # predictor.MAX_VOCABULARY
DEFAULT_OPT_CONDITIONS = 8  # a typical tabletop vocabulary; referring uses 1


@dataclass(frozen=True)
class DynamicRange:
    """min / opt / max of one dynamic axis."""

    minimum: int
    optimum: int
    maximum: int

    def __post_init__(self) -> None:
        if not (1 <= self.minimum <= self.optimum <= self.maximum):
            raise ValueError(f"Need 1 <= min <= opt <= max, got {self.minimum}, {self.optimum}, {self.maximum}.")


def default_ranges(
    num_points: int, max_conditions: int = DEFAULT_MAX_CONDITIONS, opt_conditions: int = DEFAULT_OPT_CONDITIONS
) -> dict[str, DynamicRange]:
    """Ranges for the named dynamic axes of `graph_specs` (`num_points` = the sampler's count)."""
    return {
        "num_conditions": DynamicRange(1, min(opt_conditions, max_conditions), max_conditions),
        "num_points": DynamicRange(1, num_points, num_points),
    }


def profile_shapes(spec: GraphSpec, ranges: dict[str, DynamicRange]) -> ProfileShapes:
    """(min, opt, max) shape of every *dynamic* input of `spec` (static inputs need no profile)."""
    shapes: ProfileShapes = {}
    for tensor in spec.inputs:
        if not tensor.dynamic_axes:
            continue
        missing = [axis for axis in tensor.dynamic_axes.values() if axis not in ranges]
        if missing:
            raise ValueError(f"No range for dynamic axis {missing} of input {tensor.name!r} of {spec.name}.")
        low = tensor.concrete_shape({axis: r.minimum for axis, r in ranges.items()})
        opt = tensor.concrete_shape({axis: r.optimum for axis, r in ranges.items()})
        high = tensor.concrete_shape({axis: r.maximum for axis, r in ranges.items()})
        shapes[tensor.name] = (low, opt, high)
    return shapes


def check_shape_in_profile(name: str, shape: Shape, shapes: ProfileShapes) -> None:
    """Raise ValueError naming the allowed range when `shape` is outside the engine's profile."""
    if name not in shapes:
        return
    low, _, high = shapes[name]
    if len(shape) != len(low) or any(not (lo <= s <= hi) for s, lo, hi in zip(shape, low, high)):
        raise ValueError(
            f"Input {name!r} has shape {tuple(shape)}, outside the engine's profile {tuple(low)}..{tuple(high)}; "
            "rebuild the engine with a larger max (e.g. max_conditions)."
        )
