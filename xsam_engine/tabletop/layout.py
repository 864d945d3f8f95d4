"""Random scene layouts: camera, table, light and non-overlapping-enough object placement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from .backgrounds import TABLE_STYLES, TableTexture, render_table
from .camera import CameraIntrinsics, TablePlane
from .catalog import CLASSES, COLOURS
from .rendering import Lighting, sample_lighting, stamp_footprints
from .shapes import ObjectGeometry, ObjectPatch, render_object, sample_geometry

_REFERENCE_AREA = 256 * 256
_REFERENCE_MIN_PIXELS = 150
_PLACEMENT_TRIES = 60


@dataclass(frozen=True)
class SceneOptions:
    """Optional keyword arguments of ``generate_scene``.

    Attributes:
        overlap_probability: chance that an object is placed against an earlier one (occlusion).
        distractors: paint stains, lines, paper scraps, napkins and crumbs on the table.
        shadows: drop soft shadows.
        sensor_noise: add optical blur and sensor noise to the image.
        duplicate_probability: chance that an object repeats the class of an earlier one,
            so that scenes need colours, positions or sizes to tell objects apart.
        table_styles: table looks to choose from (see ``TABLE_STYLES``).
        categories: object classes to choose from.
        colours: object colours to choose from.
        include: (category, colour) objects that must be in the scene, placed first.
        min_visible_fraction: every object keeps at least this fraction of its footprint visible.
        min_visible_pixels: every object keeps at least this many visible pixels;
            None = 150 at 256x256, scaled with the image area.
        distance_range: metres from the camera to the table along the optical axis.
        fov_range_deg: field of view across the shorter image side, in degrees.
        max_tilt_deg: largest tilt of the table plane about each image axis.
    """

    overlap_probability: float = 0.35
    distractors: bool = True
    shadows: bool = True
    sensor_noise: bool = True
    duplicate_probability: float = 0.3
    table_styles: tuple[str, ...] = TABLE_STYLES
    categories: tuple[str, ...] = CLASSES
    colours: tuple[str, ...] = tuple(COLOURS)
    include: tuple[tuple[str, str], ...] = ()
    min_visible_fraction: float = 0.6
    min_visible_pixels: int | None = None
    distance_range: tuple[float, float] = (0.6, 1.0)
    fov_range_deg: tuple[float, float] = (40.0, 52.0)
    max_tilt_deg: float = 8.0

    @classmethod
    def from_kwargs(cls, options: dict) -> SceneOptions:
        """Build from ``**options``, naming the valid keys when one is unknown."""
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - valid)
        if unknown:
            raise TypeError(f"Unknown scene option(s) {unknown}; valid options are {sorted(valid)}.")
        values = {key: tuple(tuple(v) for v in value) if key == "include" else value for key, value in options.items()}
        for key in ("table_styles", "categories", "colours"):
            if key in values:
                values[key] = tuple(values[key])
        result = cls(**values)
        result.validate()
        return result

    def validate(self) -> None:
        bad = [c for c in self.categories if c not in CLASSES] + [c for c, _ in self.include if c not in CLASSES]
        if bad or not self.categories:
            raise ValueError(f"Categories {bad or '()'} are not usable; choose non-empty from {CLASSES}.")
        bad = [c for c in self.colours if c not in COLOURS] + [c for _, c in self.include if c not in COLOURS]
        if bad or not self.colours:
            raise ValueError(f"Colours {bad or '()'} are not usable; choose non-empty from {tuple(COLOURS)}.")
        bad = [s for s in self.table_styles if s not in TABLE_STYLES]
        if bad or not self.table_styles:
            raise ValueError(f"Table styles {bad or '()'} are not usable; choose non-empty from {TABLE_STYLES}.")
        if not 0.0 < self.min_visible_fraction <= 1.0:
            raise ValueError(f"min_visible_fraction must be in (0, 1], got {self.min_visible_fraction}.")


@dataclass(eq=False)
class SceneLayout:
    """Everything random about a scene except sensor noise; rendering it is deterministic.

    ``geometries[k]`` and ``patches[k]`` describe instance ``k + 1``; later ones occlude earlier ones.
    """

    camera: CameraIntrinsics
    plane: TablePlane
    table_depth: np.ndarray
    lighting: Lighting
    table: TableTexture
    geometries: list[ObjectGeometry]
    patches: list[ObjectPatch]
    min_visible_pixels: int
    min_visible_fraction: float
    blur_sigma: float
    noise_sigma: float
    shadows: bool

    @property
    def height(self) -> int:
        return self.camera.height

    @property
    def width(self) -> int:
        return self.camera.width

    def px_per_m_at(self, x: float, y: float) -> float:
        """Image scale (pixels per metre on the table) at pixel (x, y)."""
        row = int(np.clip(round(y), 0, self.height - 1))
        col = int(np.clip(round(x), 0, self.width - 1))
        return float(self.camera.fx / self.table_depth[row, col])

    def place(self, geometry: ObjectGeometry, centre_xy: tuple[float, float]) -> ObjectGeometry:
        """``geometry`` moved to ``centre_xy``, with the image scale of its new position."""
        moved = geometry.moved_to(centre_xy)
        scale = self.px_per_m_at(*centre_xy)
        return ObjectGeometry(
            moved.category, moved.colour, moved.centre_xy, scale, moved.size_m, moved.width_ratio, moved.height_m,
            moved.angle, moved.rgb, moved.accent_rgb, moved.variant,
        )

    def inside(self, geometry: ObjectGeometry, margin: float = 1.0) -> bool:
        """Whether the whole footprint lies in the image, ``margin`` pixels from the border."""
        x, y = geometry.centre_xy
        reach = geometry.extent_px + margin
        return reach <= x <= self.width - 1 - reach and reach <= y <= self.height - 1 - reach


def sample_layout(
    rng: np.random.Generator, width: int, height: int, num_objects: tuple[int, int], options: SceneOptions
) -> SceneLayout:
    """Draw camera, table, light and objects; objects are placed until visibility allows no more."""
    camera, plane = _sample_camera(rng, width, height, options)
    table_depth = plane.depth_map(camera)
    centre_scale = float(camera.fx / plane.distance)
    style = options.table_styles[int(rng.integers(len(options.table_styles)))]
    table = render_table(style, rng, height, width, centre_scale, options.distractors)
    min_pixels = options.min_visible_pixels
    if min_pixels is None:
        min_pixels = int(round(_REFERENCE_MIN_PIXELS * width * height / _REFERENCE_AREA))
    scale = min(width, height) / 256.0
    layout = SceneLayout(
        camera=camera,
        plane=plane,
        table_depth=table_depth,
        lighting=sample_lighting(rng),
        table=table,
        geometries=[],
        patches=[],
        min_visible_pixels=min_pixels,
        min_visible_fraction=options.min_visible_fraction,
        blur_sigma=float(rng.uniform(0.35, 0.7) * max(scale, 1.0)) if options.sensor_noise else 0.0,
        noise_sigma=float(rng.uniform(0.004, 0.014)) if options.sensor_noise else 0.0,
        shadows=options.shadows,
    )
    low, high = num_objects
    wanted = max(int(rng.integers(low, high + 1)), len(options.include))
    placer = _Placer(layout, rng, options.overlap_probability)
    for category, colour in options.include:
        placer.try_place(category, colour)
    attempts = 0
    while len(layout.geometries) < wanted and attempts < 3 * wanted:
        attempts += 1
        category, colour = _draw_identity(rng, layout.geometries, options)
        placer.try_place(category, colour)
    return layout


def check_scene_size(width: int, height: int, num_objects: tuple[int, int]) -> None:
    """Reject image sizes and object counts no scene can satisfy."""
    if width < 64 or height < 64:
        raise ValueError(f"Scenes need at least 64x64 pixels to keep objects visible, got {width}x{height}.")
    low, high = num_objects
    if not 0 <= low <= high:
        raise ValueError(f"num_objects must be (min, max) with 0 <= min <= max, got {num_objects}.")


def visibility_ok(layout: SceneLayout, patches: Sequence[ObjectPatch]) -> bool:
    """Whether every patch keeps enough visible pixels once all are composited."""
    instance_map = stamp_footprints(patches, layout.height, layout.width)
    visible = np.bincount(instance_map.ravel(), minlength=len(patches) + 1)[1:]
    for patch, count in zip(patches, visible):
        if count < max(layout.min_visible_fraction * patch.area, layout.min_visible_pixels):
            return False
    return True


def _sample_camera(
    rng: np.random.Generator, width: int, height: int, options: SceneOptions
) -> tuple[CameraIntrinsics, TablePlane]:
    fov = np.radians(rng.uniform(*options.fov_range_deg))
    # The field of view spans the shorter side, so objects keep their size relative to it.
    focal = (min(width, height) / 2.0) / np.tan(fov / 2.0)
    camera = CameraIntrinsics(
        fx=float(focal),
        fy=float(focal),
        cx=float((width - 1) / 2.0 + rng.uniform(-0.01, 0.01) * width),
        cy=float((height - 1) / 2.0 + rng.uniform(-0.01, 0.01) * height),
        width=int(width),
        height=int(height),
    )
    max_slope = np.tan(np.radians(options.max_tilt_deg))
    plane = TablePlane(
        distance=float(rng.uniform(*options.distance_range)),
        slope_x=float(rng.uniform(-max_slope, max_slope)),
        slope_y=float(rng.uniform(-max_slope, max_slope)),
    )
    return camera, plane


def _draw_identity(
    rng: np.random.Generator, placed: Sequence[ObjectGeometry], options: SceneOptions
) -> tuple[str, str]:
    """A (category, colour) pair; sometimes repeats a placed class so scenes need disambiguation."""
    colour = options.colours[int(rng.integers(len(options.colours)))]
    repeatable = [g.category for g in placed if g.category in options.categories]
    if repeatable and rng.random() < options.duplicate_probability:
        return repeatable[int(rng.integers(len(repeatable)))], colour
    return options.categories[int(rng.integers(len(options.categories)))], colour


class _Placer:
    """Places objects one by one, keeping every placed object visible enough."""

    def __init__(self, layout: SceneLayout, rng: np.random.Generator, overlap_probability: float) -> None:
        self.layout = layout
        self.rng = rng
        self.overlap_probability = overlap_probability
        self.instance_map = np.zeros((layout.height, layout.width), dtype=np.int32)
        self.visible: list[int] = []

    def try_place(self, category: str, colour: str) -> bool:
        layout, rng = self.layout, self.rng
        geometry = sample_geometry(category, colour, rng, (layout.width / 2, layout.height / 2), 1.0)
        for shrink in (1.0, 0.85, 0.7):
            sized = geometry.scaled(shrink)
            for _ in range(_PLACEMENT_TRIES):
                candidate = layout.place(sized, self._candidate_centre(sized))
                candidate = self._big_enough(candidate)
                if not layout.inside(candidate):
                    continue
                patch = render_object(candidate)
                if self._keeps_others_visible(patch):
                    self._commit(candidate, patch)
                    return True
        return False

    def _candidate_centre(self, geometry: ObjectGeometry) -> tuple[float, float]:
        layout, rng = self.layout, self.rng
        if layout.geometries and rng.random() < self.overlap_probability:
            anchor = layout.geometries[int(rng.integers(len(layout.geometries)))]
            own_reach = geometry.size_m * anchor.px_per_m
            distance = (anchor.extent_px + own_reach) * rng.uniform(0.55, 0.95)
            angle = rng.uniform(-np.pi, np.pi)
            return anchor.centre_xy[0] + distance * np.cos(angle), anchor.centre_xy[1] + distance * np.sin(angle)
        return rng.uniform(0, layout.width - 1), rng.uniform(0, layout.height - 1)

    def _big_enough(self, geometry: ObjectGeometry) -> ObjectGeometry:
        """Grow objects that would be too small to stay visible at far distances or low resolution."""
        needed = 1.5 * self.layout.min_visible_pixels / self.layout.min_visible_fraction
        area = np.pi * (geometry.size_m * geometry.px_per_m) ** 2
        if geometry.category in ("box", "bottle"):
            area *= geometry.width_ratio * (4.0 / np.pi if geometry.category == "box" else 0.8)
        if area >= needed:
            return geometry
        return geometry.scaled(float(np.sqrt(needed / area)))

    def _keeps_others_visible(self, patch: ObjectPatch) -> bool:
        layout = self.layout
        h, w = patch.footprint.shape
        covered = self.instance_map[patch.y0 : patch.y0 + h, patch.x0 : patch.x0 + w][patch.footprint]
        lost = np.bincount(covered, minlength=len(self.visible) + 1)[1:]
        for index, lost_pixels in enumerate(lost):
            if lost_pixels == 0:
                continue
            full = layout.patches[index].area
            if self.visible[index] - lost_pixels < max(layout.min_visible_fraction * full, layout.min_visible_pixels):
                return False
        return True

    def _commit(self, geometry: ObjectGeometry, patch: ObjectPatch) -> None:
        h, w = patch.footprint.shape
        window = self.instance_map[patch.y0 : patch.y0 + h, patch.x0 : patch.x0 + w]
        lost = np.bincount(window[patch.footprint], minlength=len(self.visible) + 1)[1:]
        self.visible = [count - int(lost_pixels) for count, lost_pixels in zip(self.visible, lost)]
        window[patch.footprint] = len(self.visible) + 1
        self.visible.append(patch.area)
        self.layout.geometries.append(geometry)
        self.layout.patches.append(patch)
