"""3D estimates of segmented objects from a registered depth image: plain numpy, no ROS.

Conventions: depth is an (H, W) float array in metres along the optical axis (z), registered
to the colour image (same pixel grid); invalid pixels are 0, NaN or +-inf. The camera matrix
K is the 3x3 pinhole matrix of that pixel grid (sensor_msgs/CameraInfo.k). Points are in the
camera optical frame (REP-103: x right, y down, z forward), metres. Pixel (row v, column u)
has its centre at image coordinates (u, v), as ``CameraInfo`` and ``Scene.camera`` assume.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Depth outlier rejection: keep |z - median(z)| <= band, where
#   band = max(MAD_SCALE * 1.4826 * MAD(z), SIZE_FACTOR * lateral size of the mask, MIN_BAND_M).
# The size term keeps every layer of a legitimately deep surface (a cup's rim, handle and inner
# floor differ by its height) while background seen through or around the object and flying
# pixels, which lie much further away than the object is large, are dropped.
MAD_SCALE = 3.0
SIZE_FACTOR = 1.0
MIN_BAND_M = 0.05
# Segmentation masks bleed onto the background at their border. A pixel within the mask's rim
# (EDGE_FRACTION of the image's larger side, at least MIN_EDGE_PX) is treated as background when
# it lies clearly behind the object:
# - behind the median depth by more than max(MAD_SCALE * 1.4826 * MAD, MIN_BEHIND_M), or
# - it continues the background outside the mask (reached from an unmasked pixel through rim
#   pixels whose depth changes by at most a smooth surface's step from pixel to pixel,
#   max(MIN_STEP_M, STEP_FACTOR x the pixel's footprint z / f)) and lies behind the front-most
#   mask pixel within LOCAL_WINDOW_FACTOR rim widths by more than MIN_BEHIND_M: the table a
#   cup's mask bled onto. The median alone misses it, because a cup's median is as deep as the
#   table (its inner floor).
# Pixels the background does not reach are kept: a cup's inner floor and inner wall are as deep
# as the table, but its rim (a depth step) separates them from the mask's border.
EDGE_FRACTION = 1.0 / 100.0
MIN_EDGE_PX = 2
LOCAL_WINDOW_FACTOR = 1.5
MIN_STEP_M = 0.005
STEP_FACTOR = 3.0
MIN_BEHIND_M = 0.02
MIN_VALID_PIXELS = 10
EXTENT_PERCENTILES = (5.0, 95.0)


@dataclass(frozen=True, eq=False)
class ObjectGeometry:
    """Robust 3D statistics of one mask.

    Attributes:
        centroid: (3,) metres, mean of the inlier points.
        extent: (3,) metres, 95th minus 5th percentile of the inlier points per axis.
        num_points: inlier pixels that contributed.
        num_mask_pixels: pixels of the mask.
        num_valid_depth: mask pixels with valid depth before outlier rejection.
        points: (num_points, 3) float32 metres, the inlier points themselves (camera optical
            frame), in the mask's row-major pixel order: what ``centroid`` and ``extent`` were
            computed from, e.g. for a per-instance point cloud (``xsam_ros.point_clouds``).
    """

    centroid: np.ndarray
    extent: np.ndarray
    num_points: int
    num_mask_pixels: int
    num_valid_depth: int
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32), repr=False)


class GeometryError(ValueError):
    """The inputs cannot give a 3D estimate (wrong sizes, bad camera matrix); the message says why."""


def check_camera_matrix(k: np.ndarray | list[float]) -> np.ndarray:
    """(3, 3) float64 K from a 9-element row-major list or a 3x3 array; raises GeometryError if unusable."""
    matrix = np.asarray(k, dtype=np.float64).reshape(-1)
    if matrix.size != 9:
        raise GeometryError(f"camera matrix K must have 9 elements, got {matrix.size}")
    matrix = matrix.reshape(3, 3)
    fx, fy = matrix[0, 0], matrix[1, 1]
    if not np.all(np.isfinite(matrix)) or fx <= 0 or fy <= 0:
        raise GeometryError(f"camera matrix K is not a valid pinhole matrix (fx={fx}, fy={fy}); is camera_info calibrated?")
    return matrix


def image_camera_matrix(
    k: np.ndarray | list[float],
    full_size: tuple[int, int],
    image_size: tuple[int, int],
    binning: tuple[int, int] = (0, 0),
    roi: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> np.ndarray:
    """K of the images a camera_info describes, after its ROI and binning (REP-104).

    A sensor_msgs/CameraInfo carries K of the full sensor (``width`` x ``height``) and says how
    the published images were taken from it: the region of interest ``roi`` (in full-sensor
    pixels; all zeros = the whole sensor) and the binning factors (0 = 1 = none). The images
    are then ``roi.width / binning_x`` x ``roi.height / binning_y`` pixels (integer division),
    and their K is K of the sensor with the principal point moved by the ROI offset, then the
    x row divided by ``binning_x`` and the y row by ``binning_y``. This is the rule of ROS
    ``image_geometry``'s ``PinholeCameraModel::fromCameraInfo`` and ``reducedResolution``
    (ros-perception/vision_opencv, image_geometry/src/pinhole_camera_model.cpp; the Python
    ``image_geometry/cameramodels.py`` does the same): ``cx' = (cx - roi.x_offset) /
    binning_x``, ``cy' = (cy - roi.y_offset) / binning_y``, ``fx' = fx / binning_x``,
    ``fy' = fy / binning_y``. The skew ``K[0, 1]`` is divided by ``binning_x`` as well (the
    x row of K scales as a whole; image_geometry leaves it, which is the same for the usual
    skew of 0).

    Args:
        k: 9 numbers, row-major (CameraInfo.k), or a 3x3 array.
        full_size: (width, height) of the sensor (CameraInfo.width / height); (0, 0) = unknown
            (then only a non-empty ROI gives the image size; otherwise the size is not checked).
        image_size: (width, height) of the colour / depth images actually received.
        binning: (binning_x, binning_y).
        roi: (x_offset, y_offset, width, height) of CameraInfo.roi.

    Returns:
        (3, 3) float64 K of the received images' pixel grid.

    Raises:
        GeometryError: when the images' size differs from the size the camera_info implies
            after ROI and binning, when the ROI does not fit the sensor, or when K is unusable.
    """
    matrix = check_camera_matrix(k).copy()
    full_width, full_height = (int(v) for v in full_size)
    binning_x, binning_y = (max(1, int(v)) for v in binning)
    x_offset, y_offset, roi_width, roi_height = (int(v) for v in roi)
    if (x_offset, y_offset, roi_width, roi_height) == (0, 0, 0, 0):
        roi_width, roi_height = full_width, full_height
    elif full_width and full_height and (x_offset + roi_width > full_width or y_offset + roi_height > full_height):
        raise GeometryError(
            f"camera_info roi {roi_width}x{roi_height} at ({x_offset}, {y_offset}) does not fit its "
            f"{full_width}x{full_height} sensor; fix the camera driver's calibration or roi")
    expected = (roi_width // binning_x, roi_height // binning_y)
    if expected != (0, 0) and expected != tuple(image_size):
        detail = f"{full_width}x{full_height} sensor"
        if (roi_width, roi_height) != (full_width, full_height) or x_offset or y_offset:
            detail += f", roi {roi_width}x{roi_height} at ({x_offset}, {y_offset})"
        if (binning_x, binning_y) != (1, 1):
            detail += f", binning {binning_x}x{binning_y}"
        raise GeometryError(
            f"camera_info ({detail}) describes {expected[0]}x{expected[1]} images (REP-104: roi size / binning) "
            f"but the images are {image_size[0]}x{image_size[1]}; publish the camera_info of this image stream "
            "(e.g. the aligned depth's camera_info for aligned_depth_to_color)")
    matrix[0, 2] -= x_offset
    matrix[1, 2] -= y_offset
    matrix[0, :] /= binning_x
    matrix[1, :] /= binning_y
    return matrix


def back_project(u: np.ndarray, v: np.ndarray, z: np.ndarray, k: np.ndarray) -> np.ndarray:
    """(N, 3) points for pixel columns ``u``, rows ``v`` and depths ``z`` (metres)."""
    k = check_camera_matrix(k)
    fx, fy, cx, cy, skew = k[0, 0], k[1, 1], k[0, 2], k[1, 2], k[0, 1]
    z = np.asarray(z, dtype=np.float64)
    y = (np.asarray(v, dtype=np.float64) - cy) / fy
    x = (np.asarray(u, dtype=np.float64) - cx - skew * y) / fx
    return np.stack([x * z, y * z, z], axis=-1)


def valid_depth(depth: np.ndarray, min_depth_m: float, max_depth_m: float) -> np.ndarray:
    """(H, W) bool: finite and within [min_depth_m, max_depth_m] (0 = hole is never valid)."""
    depth = np.asarray(depth)
    with np.errstate(invalid="ignore"):
        return np.isfinite(depth) & (depth > 0) & (depth >= min_depth_m) & (depth <= max_depth_m)


# REP-118 depth units: the factor from the stored values to metres, per encoding.
REP118_METRES_PER_UNIT = {"32FC1": 1.0, "16UC1": 0.001, "mono16": 0.001}


def explain_no_valid_depth(
    depths_m: np.ndarray, min_depth_m: float, max_depth_m: float, encoding: str = ""
) -> str:
    """Why no depth value under a mask lies in [min_depth_m, max_depth_m], and the likely fix.

    Args:
        depths_m: depths under the mask in metres (as converted by REP-118 from ``encoding``;
            0, NaN and inf are holes).
        encoding: the depth image's encoding ("32FC1", "16UC1", "mono16"), used to recognise
            values in the wrong unit: 32FC1 that holds millimetres (a ~610 mm object reads 610 m)
            and 16UC1 that holds metres (reads ~0.001 m).

    Returns:
        One sentence for a log line / last_error.
    """
    values = np.asarray(depths_m, dtype=np.float64).reshape(-1)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return ("no depth under the mask: every pixel is a hole (0, NaN or inf); check that the depth image is "
                "registered to the colour image and that the camera sees the object")
    low, median, high = (float(v) for v in np.percentile(values, (5, 50, 95)))
    text = (f"no depth under the mask lies within min_depth_m..max_depth_m = {min_depth_m:g}..{max_depth_m:g} m: "
            f"it is {low:.4g}..{high:.4g} m (median {median:.4g} m)")
    factor = REP118_METRES_PER_UNIT.get(encoding)
    if encoding == "32FC1" and min_depth_m <= median / 1000.0 <= max_depth_m:
        return text + ("; the values look like millimetres, but REP-118 says 32FC1 depth is in metres (16UC1 in "
                       "millimetres): publish metres in 32FC1, or the millimetres as 16UC1")
    if factor == 0.001 and min_depth_m <= median * 1000.0 <= max_depth_m:
        return text + (f"; the values look like metres, but REP-118 says {encoding} depth is in millimetres: "
                       "publish millimetres in 16UC1, or metres as 32FC1")
    return text + ("; check the depth units (REP-118: 32FC1 metres, 16UC1 millimetres) and the min_depth_m / "
                   "max_depth_m parameters")


def inlier_depths(z: np.ndarray, lateral_size_m: float = 0.0) -> np.ndarray:
    """Bool mask of the depths within the robust band around their median (see MAD_SCALE)."""
    median = np.median(z)
    mad = np.median(np.abs(z - median))
    band = max(MAD_SCALE * 1.4826 * mad, SIZE_FACTOR * lateral_size_m, MIN_BAND_M)
    return np.abs(z - median) <= band


def edge_pixels(mask: np.ndarray, width_px: int) -> np.ndarray:
    """(h, w) bool: mask pixels within ``width_px`` of the mask's border (outside the crop counts as border)."""
    import cv2

    if width_px <= 0:
        return np.zeros(mask.shape, dtype=bool)
    kernel = np.ones((2 * width_px + 1, 2 * width_px + 1), np.uint8)
    inner = cv2.erode(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
    return mask & ~inner


def nearest_front_depth(mask: np.ndarray, depth: np.ndarray, radius_px: int) -> np.ndarray:
    """(h, w) float32: the smallest depth of ``mask`` pixels within ``radius_px`` (a square window) of each pixel.

    ``mask`` marks the pixels that count (e.g. mask pixels with valid depth); elsewhere the
    result is a large value (1e9) where no such pixel is near.
    """
    import cv2

    values = np.where(mask, depth, np.float32(1e9)).astype(np.float32)
    if radius_px <= 0:
        return values
    kernel = np.ones((2 * radius_px + 1, 2 * radius_px + 1), np.uint8)
    return cv2.erode(values, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=1e9)


def _shifted(array: np.ndarray, dy: int, dx: int, fill) -> np.ndarray:
    """``array`` moved by (dy, dx): result[r, c] = array[r - dy, c - dx], ``fill`` where that is outside."""
    result = np.full_like(array, fill)
    height, width = array.shape
    result[max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
        array[max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)]
    return result


def background_connected(mask: np.ndarray, depth: np.ndarray, valid: np.ndarray, rim: np.ndarray,
                         step_m: float, rounds: int) -> np.ndarray:
    """(h, w) bool: ``rim`` pixels (valid depth) that continue the background outside ``mask``.

    Grown from the valid unmasked pixels into the rim, 8-connected, through pixels whose depth
    differs from the neighbour's by at most ``step_m``, for at most ``rounds`` pixels (the rim's
    width and one: the growth crosses the rim but does not run along it around the object).
    """
    reached = valid & ~mask
    found = np.zeros(mask.shape, dtype=bool)
    candidates = rim & valid
    neighbours = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    for _ in range(rounds):
        new = np.zeros_like(found)
        for dy, dx in neighbours:
            near = _shifted(reached, dy, dx, False)
            with np.errstate(invalid="ignore"):
                close = np.abs(depth - _shifted(depth, dy, dx, np.nan)) <= step_m
            new |= candidates & ~found & near & close
        if not new.any():
            break
        found |= new
        reached = reached | new
    return found


def object_geometry(
    mask: np.ndarray,
    depth: np.ndarray,
    k: np.ndarray | list[float],
    min_depth_m: float = 0.05,
    max_depth_m: float = 10.0,
    min_points: int = MIN_VALID_PIXELS,
    roi: tuple[int, int, int, int] | None = None,
    edge_px: int | None = None,
) -> ObjectGeometry | None:
    """Robust centroid and extent of the visible surface under ``mask``.

    Mask pixels without valid depth (0, NaN, inf, outside the depth range) are skipped. Depth
    outliers are rejected on z before back-projection, in two steps:
    1. far outliers (background seen through holes, flying pixels): outside a band around the
       median (median + MAD, widened to the object's lateral size so that every layer of a deep
       object stays);
    2. mask bleed: pixels on the mask's rim (``edge_px`` wide; default 1/100 of the depth
       image's larger side, at least 2) that lie clearly behind the median depth, or behind the
       object next to them (a depth step of more than MIN_BEHIND_M to the front-most mask pixel
       within 1.5 rim widths).
    The centroid is the mean of the remaining points: with a perfect mask and clean depth it is
    (nearly) the mean of the object's visible surface.

    Args:
        mask: (H, W) bool, the image's pixel grid; or, with ``roi``, the (h, w) crop of it.
        depth: (H, W) metres, registered to the image.
        k: camera matrix of that pixel grid.
        roi: (x, y, w, h) when ``mask`` is a crop at that offset.
        edge_px: width of the rim checked for mask bleed (None = automatic, 0 = off).

    Returns None when fewer than ``min_points`` pixels have valid depth. Raises GeometryError
    when the sizes do not match or K is unusable.
    """
    depth = full_depth = np.asarray(depth)
    if depth.ndim != 2:
        raise GeometryError(f"depth must be a 2D array, got shape {depth.shape}")
    mask = np.asarray(mask, dtype=bool)
    if roi is None:
        if mask.shape != depth.shape:
            raise GeometryError(
                f"mask size {mask.shape[1]}x{mask.shape[0]} differs from depth size {depth.shape[1]}x{depth.shape[0]}; "
                "depth must be registered to the colour image at the same resolution")
        x0 = y0 = 0
    else:
        x0, y0, width, height = roi
        if mask.shape != (height, width) or x0 < 0 or y0 < 0 or x0 + width > depth.shape[1] or y0 + height > depth.shape[0]:
            raise GeometryError(
                f"mask crop {mask.shape[1]}x{mask.shape[0]} at ({x0}, {y0}) does not fit the "
                f"{depth.shape[1]}x{depth.shape[0]} depth image")
    matrix = check_camera_matrix(k)
    if edge_px is None:
        edge_px = max(MIN_EDGE_PX, int(round(max(full_depth.shape) * EDGE_FRACTION)))
    # The crop with a margin of the background around it (the rim's bleed test looks outside the mask).
    margin = edge_px + 1
    top, left = max(0, y0 - margin), max(0, x0 - margin)
    bottom = min(full_depth.shape[0], y0 + mask.shape[0] + margin)
    right = min(full_depth.shape[1], x0 + mask.shape[1] + margin)
    around = np.asarray(full_depth[top:bottom, left:right], dtype=np.float32)
    padded = np.zeros(around.shape, dtype=bool)
    padded[y0 - top:y0 - top + mask.shape[0], x0 - left:x0 - left + mask.shape[1]] = mask
    valid = valid_depth(around, min_depth_m, max_depth_m)
    rows, cols = np.nonzero(padded)
    z = around[rows, cols].astype(np.float64)
    good = valid[rows, cols]
    num_valid = int(good.sum())
    if num_valid < min_points:
        return None
    rows, cols, z = rows[good], cols[good], z[good]
    # Lateral size (m) of the mask's box at the median depth.
    diagonal_px = float(np.hypot(cols.max() - cols.min() + 1, rows.max() - rows.min() + 1))
    focal = max(matrix[0, 0], matrix[1, 1])
    lateral_size_m = diagonal_px * float(np.median(z)) / focal
    keep = inlier_depths(z, lateral_size_m)
    if int(keep.sum()) < min_points:
        return None
    median = np.median(z[keep])
    spread = MAD_SCALE * 1.4826 * np.median(np.abs(z[keep] - median))
    rim = edge_pixels(padded, edge_px)
    bleed = rim[rows, cols] & (z - median > max(spread, MIN_BEHIND_M))
    if edge_px > 0:
        step_m = max(MIN_STEP_M, STEP_FACTOR * float(median) / focal)
        outside = background_connected(padded, around, valid, rim, step_m, edge_px + 1)[rows, cols]
        front = nearest_front_depth(padded & valid, around, int(np.ceil(LOCAL_WINDOW_FACTOR * edge_px)))[rows, cols]
        bleed |= outside & (z - front > MIN_BEHIND_M)
    if int((keep & ~bleed).sum()) >= min_points:
        keep &= ~bleed
    rows, cols = rows + top, cols + left
    points = back_project(cols[keep], rows[keep], z[keep], matrix)
    low, high = np.percentile(points, EXTENT_PERCENTILES, axis=0)
    return ObjectGeometry(
        centroid=points.mean(axis=0),
        extent=high - low,
        num_points=int(keep.sum()),
        num_mask_pixels=int(mask.sum()),
        num_valid_depth=num_valid,
        points=points.astype(np.float32),
    )
