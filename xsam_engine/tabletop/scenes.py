"""Procedural tabletop scenes with exact instance, semantic and depth ground truth.

A pinhole camera 0.6-1.0 m above a (mildly tilted) table looks down at 2-6 objects of the
classes in ``CLASSES``. Everything is drawn from ``numpy.random.default_rng(seed)``, so a seed
always gives the same scene.

Example:
    >>> scene = generate_scene(7)
    >>> scene.image.shape, scene.objects[0].category
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .camera import CameraIntrinsics, TablePlane
from .catalog import ALL_CLASSES, CLASSES, COLOURS, STUFF_CLASSES, TABLE_CLASS_ID
from .layout import SceneLayout, SceneOptions, check_scene_size, sample_layout
from .rendering import CompositeLayers, composite, finish_image

DEFAULT_NUM_OBJECTS = (2, 6)  # inclusive range of objects per generated scene

__all__ = [  # the catalog's names are xsam_engine.tabletop.catalog's (and the package's) to export
    "CameraIntrinsics",
    "Scene",
    "SceneObject",
    "SceneOptions",
    "TablePlane",
    "generate_scene",
    "render_layout",
    "seeds_with_one",
]


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene.

    Attributes:
        instance_id: 1-based; ``Scene.objects[instance_id - 1]``; the value in ``instance_map``.
        category: one of ``CLASSES``.
        colour: key of ``COLOURS``.
        box_xyxy: tight box (x0, y0, x1, y1) of the visible mask in pixels, x1 / y1 exclusive.
        centre_xy: (x, y) centroid of the visible mask in pixels.
        area: visible pixels.
        full_area: pixels the object would cover without occlusion.
        size_m: largest horizontal dimension in metres (diameter, or length of bottle / box).
        height_m: height of its top above the table in metres (including what it rests on).
        base_height_m: height above the table of what it rests on (0 when on the table).
    """

    instance_id: int
    category: str
    colour: str
    box_xyxy: tuple[int, int, int, int]
    centre_xy: tuple[float, float]
    area: int
    full_area: int
    size_m: float
    height_m: float
    base_height_m: float = 0.0

    @property
    def class_id(self) -> int:
        return CLASSES.index(self.category)

    @property
    def name(self) -> str:
        """'colour category', e.g. 'red cup'."""
        return f"{self.colour} {self.category}"


@dataclass(eq=False)
class Scene:
    """An RGB-D frame with ground truth.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        instance_map: (H, W) int32; 0 = table, k = ``objects[k - 1]`` (visible pixels, after occlusion).
        semantic_map: (H, W) int32 class id into ``CLASSES`` for object pixels, ``TABLE_CLASS_ID`` elsewhere.
        depth: (H, W) float32 metres along the optical axis, registered to ``image``, no holes.
        camera: intrinsics of ``image`` and ``depth``.
        objects: the objects, in draw order (later ones occlude earlier ones).
        table_style: how the table looks, one of ``TABLE_STYLES`` ("wooden", "checkered", ...).
        plane: the table plane in the camera frame.
        info: free-form facts about how the scene was made, e.g. ``{"frame": 3, "moving_instance": 2}``
            for sequence frames.
    """

    image: np.ndarray
    instance_map: np.ndarray
    semantic_map: np.ndarray
    depth: np.ndarray
    camera: CameraIntrinsics
    objects: list[SceneObject]
    table_style: str = ""
    plane: TablePlane | None = field(default=None, repr=False)
    info: dict[str, object] = field(default_factory=dict)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    def object(self, instance_id: int) -> SceneObject:
        """The object with ``instance_id`` (1-based)."""
        if not 1 <= instance_id <= len(self.objects):
            raise ValueError(f"instance_id must be in 1..{len(self.objects)}, got {instance_id}.")
        return self.objects[instance_id - 1]

    def mask(self, instance_id: int) -> np.ndarray:
        """(H, W) bool visible pixels of an object; ``instance_id`` 0 gives the table."""
        if not 0 <= instance_id <= len(self.objects):
            raise ValueError(f"instance_id must be in 0..{len(self.objects)}, got {instance_id}.")
        return self.instance_map == instance_id

    def table_mask(self) -> np.ndarray:
        """(H, W) bool pixels of the table (everything that is not an object)."""
        return self.instance_map == 0

    def centroid_3d(self, instance_id: int) -> np.ndarray:
        """(3,) metres: mean of the back-projected visible pixels of an object, from the true depth."""
        rows, cols = np.nonzero(self.mask(instance_id))
        points = self.camera.back_project(cols, rows, self.depth[rows, cols])
        return points.mean(axis=0)


def generate_scene(
    seed: int, width: int = 256, height: int = 256, num_objects: tuple[int, int] = DEFAULT_NUM_OBJECTS, **options
) -> Scene:
    """Generate a tabletop scene, deterministically from ``seed``.

    Args:
        seed: any int accepted by ``numpy.random.default_rng``.
        width, height: image size in pixels; object sizes scale with it.
        num_objects: inclusive (min, max) number of objects. Fewer are placed only when the table
            is too full to keep every object visible (not the case for the default range).
        **options: fields of ``SceneOptions`` (e.g. ``include=[("cup", "red")]``, ``shadows=False``).
    """
    check_scene_size(width, height, num_objects)
    scene_options = SceneOptions.from_kwargs(options)
    rng = np.random.default_rng(seed)
    layout = sample_layout(rng, width, height, num_objects, scene_options)
    return render_layout(layout, rng)


def render_layout(layout: SceneLayout, noise_rng: np.random.Generator) -> Scene:
    """Render a layout into a ``Scene``; ``noise_rng`` only draws the sensor noise."""
    layers = composite(layout.table, layout.patches, layout.lighting, layout.shadows)
    image = finish_image(layers.radiance, noise_rng, layout.blur_sigma, layout.noise_sigma)
    class_ids = np.array([TABLE_CLASS_ID] + [CLASSES.index(g.category) for g in layout.geometries], dtype=np.int32)
    semantic_map = class_ids[layers.instance_map]
    surface = np.maximum(layers.object_height, layout.table.relief)
    depth = (layout.table_depth - surface * np.float32(layout.plane.up_z)).astype(np.float32)
    objects = _describe_objects(layout, layers)
    return Scene(
        image=image,
        instance_map=layers.instance_map,
        semantic_map=semantic_map,
        depth=depth,
        camera=layout.camera,
        objects=objects,
        table_style=layout.table.style,
        plane=layout.plane,
    )


def _describe_objects(layout: SceneLayout, layers: CompositeLayers) -> list[SceneObject]:
    instance_map = layers.instance_map
    objects = []
    for index, (geometry, patch) in enumerate(zip(layout.geometries, layout.patches), start=1):
        h, w = patch.footprint.shape
        window = (slice(max(patch.y0, 0), patch.y0 + h), slice(max(patch.x0, 0), patch.x0 + w))
        local = instance_map[window] == index
        rows, cols = np.nonzero(local)
        if rows.size == 0:
            raise RuntimeError(f"Object {index} ({geometry.category}) is fully occluded; this is a generator bug.")
        rows = rows + window[0].start
        cols = cols + window[1].start
        length = 2.0 * geometry.size_m
        if geometry.category in ("cup", "mug"):
            length = 2.0 * geometry.extent_m  # handles included
        objects.append(
            SceneObject(
                instance_id=index,
                category=geometry.category,
                colour=geometry.colour,
                box_xyxy=(int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1),
                centre_xy=(float(cols.mean()), float(rows.mean())),
                area=int(rows.size),
                full_area=patch.area,
                size_m=float(length),
                height_m=float(layers.base_heights[index - 1] + patch.height.max()),
                base_height_m=float(layers.base_heights[index - 1]),
            )
        )
    return objects


def seeds_with_one(
    category: str, colour: str, count: int, first_seed: int, width: int = 640, height: int = 480,
    max_tries: int = 100_000,
) -> list[int]:
    """The first `count` seeds from `first_seed` on whose default scene (`generate_scene(seed, width,
    height)`, nothing forced) holds exactly one `colour` `category` object, in seed order.

    A fixed rule for picking demo and test scenes that is not chosen for any model: it reads only
    the layouts (no rendering), so scanning a few hundred seeds takes seconds.

    Raises:
        ValueError: unknown category / colour, or fewer than `count` seeds within `max_tries`.
    """
    if category not in CLASSES or colour not in COLOURS:
        raise ValueError(f"Unknown object {colour!r} {category!r}; categories {list(CLASSES)}, colours {list(COLOURS)}.")
    check_scene_size(width, height, DEFAULT_NUM_OBJECTS)
    found: list[int] = []
    for seed in range(first_seed, first_seed + max_tries):
        layout = sample_layout(np.random.default_rng(seed), width, height, DEFAULT_NUM_OBJECTS, SceneOptions())
        if sum(g.category == category and g.colour == colour for g in layout.geometries) == 1:
            found.append(seed)
            if len(found) == count:
                return found
    raise ValueError(f"Only {len(found)} of {count} seeds with one {colour} {category} in {max_tries} tries.")
