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
# Segmentation masks bleed onto the background at their border. Pixels within the mask's rim
# (EDGE_FRACTION of the image's larger side, at least MIN_EDGE_PX) that lie behind the median
# depth by more than max(MAD_SCALE * 1.4826 * MAD, MIN_BEHIND_M) are treated as background.
# Interior pixels are kept (a cup's inner floor is as deep as the table around it).
EDGE_FRACTION = 1.0 / 200.0
MIN_EDGE_PX = 2
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
    2. mask bleed: pixels on the mask's rim (``edge_px`` wide; default 1/200 of the depth
       image's larger side, at least 2) that lie clearly behind the median depth.
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
    depth = np.asarray(depth)
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
        depth = depth[y0:y0 + height, x0:x0 + width]
    matrix = check_camera_matrix(k)
    if edge_px is None:
        edge_px = max(MIN_EDGE_PX, int(round(max(depth.shape) * EDGE_FRACTION)))
    edges = edge_pixels(mask, edge_px)
    rows, cols = np.nonzero(mask)
    z = depth[rows, cols].astype(np.float64)
    on_edge = edges[rows, cols]
    good = valid_depth(z, min_depth_m, max_depth_m)
    num_valid = int(good.sum())
    if num_valid < min_points:
        return None
    rows, cols, z, on_edge = rows[good], cols[good], z[good], on_edge[good]
    # Lateral size (m) of the mask's box at the median depth.
    diagonal_px = float(np.hypot(cols.max() - cols.min() + 1, rows.max() - rows.min() + 1))
    lateral_size_m = diagonal_px * float(np.median(z)) / max(matrix[0, 0], matrix[1, 1])
    keep = inlier_depths(z, lateral_size_m)
    if int(keep.sum()) < min_points:
        return None
    median = np.median(z[keep])
    spread = MAD_SCALE * 1.4826 * np.median(np.abs(z[keep] - median))
    bleed = on_edge & (z - median > max(spread, MIN_BEHIND_M))
    if int((keep & ~bleed).sum()) >= min_points:
        keep &= ~bleed
    points = back_project(cols[keep] + x0, rows[keep] + y0, z[keep], matrix)
    low, high = np.percentile(points, EXTENT_PERCENTILES, axis=0)
    return ObjectGeometry(
        centroid=points.mean(axis=0),
        extent=high - low,
        num_points=int(keep.sum()),
        num_mask_pixels=int(mask.sum()),
        num_valid_depth=num_valid,
        points=points.astype(np.float32),
    )
