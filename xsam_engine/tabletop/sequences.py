"""Short videos of one tabletop scene in which exactly one object slides along a line or an arc."""

from __future__ import annotations

import dataclasses

import numpy as np

from .layout import SceneLayout, SceneOptions, check_scene_size, sample_layout, visibility_ok
from .scenes import Scene, render_layout
from .shapes import render_object

_TRAJECTORY_TRIES = 24
_LAYOUT_TRIES = 6


def generate_sequence(
    seed: int,
    num_frames: int = 30,
    width: int = 256,
    height: int = 256,
    moving_instance: int | None = None,
    num_objects: tuple[int, int] = (2, 6),
    **options,
) -> list[Scene]:
    """Frames of one scene where a single object moves smoothly; deterministic from ``seed``.

    The moving object advances 2-4 px per frame at 256x256 (scaled with the image size) along a
    straight line or a circular arc and stays inside the image and visible enough; every other
    object stays put. Instance ids are the same in every frame. Frame 0 is the unmoved layout.
    Each frame's ``Scene.info`` holds ``{"frame": i, "moving_instance": k}``.

    Args:
        seed: any int accepted by ``numpy.random.default_rng``.
        num_frames: number of frames (>= 1).
        width, height: image size in pixels.
        moving_instance: 1-based id of the object to move; None picks one that can move freely.
        num_objects: inclusive (min, max) number of objects; at least 1 is needed.
        **options: fields of ``SceneOptions``.
    """
    check_scene_size(width, height, num_objects)
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}.")
    if num_objects[1] < 1:
        raise ValueError("A sequence needs at least one object to move; raise num_objects[1].")
    scene_options = SceneOptions.from_kwargs(options)
    rng = np.random.default_rng(seed)
    for _ in range(_LAYOUT_TRIES):
        layout = sample_layout(rng, width, height, (max(1, num_objects[0]), num_objects[1]), scene_options)
        if moving_instance is not None and not 1 <= moving_instance <= len(layout.geometries):
            raise ValueError(
                f"moving_instance must be in 1..{len(layout.geometries)} for seed {seed}, got {moving_instance}."
            )
        found = _find_trajectory(layout, rng, num_frames, moving_instance)
        if found is not None:
            break
    else:
        raise RuntimeError(
            f"No object of seed {seed} can move for {num_frames} frames while staying visible; "
            "try another seed, fewer frames or moving_instance=None."
        )
    index, centres = found
    noise_seeds = rng.integers(0, 2**63 - 1, size=num_frames)
    frames = []
    for frame, (centre, noise_seed) in enumerate(zip(centres, noise_seeds)):
        frame_layout = _with_object_at(layout, index, centre)
        scene = render_layout(frame_layout, np.random.default_rng(int(noise_seed)))
        scene.info.update(frame=frame, moving_instance=index + 1)
        frames.append(scene)
    return frames


def _with_object_at(layout: SceneLayout, index: int, centre: tuple[float, float]) -> SceneLayout:
    geometries = list(layout.geometries)
    patches = list(layout.patches)
    geometries[index] = layout.place(geometries[index], centre)
    patches[index] = render_object(geometries[index])
    return dataclasses.replace(layout, geometries=geometries, patches=patches)


def _find_trajectory(
    layout: SceneLayout, rng: np.random.Generator, num_frames: int, moving_instance: int | None
) -> tuple[int, list[tuple[float, float]]] | None:
    """(object index, centre per frame) of a valid motion, or None."""
    if moving_instance is not None:
        order = [moving_instance - 1]
    else:
        # Objects that touch nobody first: they slide without changing what rests on what.
        order = sorted(range(len(layout.geometries)), key=lambda i: (_overlaps(layout, i), rng.random()))
    scale = min(layout.width, layout.height) / 256.0
    for index in order:
        for attempt in range(_TRAJECTORY_TRIES):
            # Late attempts slow down: a slow object finds room more easily.
            speed = (rng.uniform(2.0, 4.0) if attempt < _TRAJECTORY_TRIES // 2 else rng.uniform(1.0, 2.0)) * scale
            centres = _trajectory(rng, layout.geometries[index].centre_xy, speed, num_frames, scale)
            if _valid(layout, index, centres):
                return index, centres
    return None


def _trajectory(
    rng: np.random.Generator, start: tuple[float, float], speed: float, num_frames: int, scale: float
) -> list[tuple[float, float]]:
    """Centres along a line or a circular arc starting at ``start`` with ``speed`` px per frame."""
    steps = np.arange(num_frames, dtype=np.float64)
    heading = rng.uniform(-np.pi, np.pi)
    if rng.random() < 0.5:
        xs = start[0] + speed * steps * np.cos(heading)
        ys = start[1] + speed * steps * np.sin(heading)
    else:
        radius = rng.uniform(40.0, 120.0) * scale
        turn = rng.choice([-1.0, 1.0]) * speed / radius
        angles = heading + turn * steps
        centre_x, centre_y = start[0] - radius * np.cos(heading), start[1] - radius * np.sin(heading)
        xs, ys = centre_x + radius * np.cos(angles), centre_y + radius * np.sin(angles)
    return [(float(x), float(y)) for x, y in zip(xs, ys)]


def _valid(layout: SceneLayout, index: int, centres: list[tuple[float, float]]) -> bool:
    geometry = layout.geometries[index]
    if not all(layout.inside(layout.place(geometry, centre)) for centre in centres):
        return False
    patches = list(layout.patches)
    for centre in centres[1:]:
        patches[index] = render_object(layout.place(geometry, centre))
        if not visibility_ok(layout, patches):
            return False
    return True


def _overlaps(layout: SceneLayout, index: int) -> int:
    """How many other objects come within reach of object ``index``."""
    x, y = layout.geometries[index].centre_xy
    reach = layout.geometries[index].extent_px
    count = 0
    for other, geometry in enumerate(layout.geometries):
        if other != index and np.hypot(geometry.centre_xy[0] - x, geometry.centre_xy[1] - y) < reach + geometry.extent_px:
            count += 1
    return count
