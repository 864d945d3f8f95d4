"""Pinhole camera and the table plane it looks at."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics in pixels for the camera optical frame (x right, y down, z forward).

    Pixel (row v, column u) has its centre at image coordinates (u, v).
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @property
    def matrix(self) -> np.ndarray:
        """(3, 3) float64 K matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def back_project(self, u: np.ndarray, v: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """(N, 3) metres: points at pixel coordinates (u, v) with the given optical-axis depth."""
        depth = np.asarray(depth, dtype=np.float64)
        x = (np.asarray(u, dtype=np.float64) - self.cx) * depth / self.fx
        y = (np.asarray(v, dtype=np.float64) - self.cy) * depth / self.fy
        return np.stack([x, y, depth], axis=-1)


@dataclass(frozen=True)
class TablePlane:
    """The table plane n . X = distance, with n = (slope_x, slope_y, 1) in the camera frame.

    ``distance`` is the depth where the optical axis meets the table; the slopes tilt the plane
    mildly (a slope of 0.1 is about 6 degrees).
    """

    distance: float
    slope_x: float = 0.0
    slope_y: float = 0.0

    @property
    def up_z(self) -> float:
        """Depth change per metre of height above the table (minus the z of the unit normal)."""
        return 1.0 / float(np.sqrt(1.0 + self.slope_x**2 + self.slope_y**2))

    def depth_map(self, camera: CameraIntrinsics) -> np.ndarray:
        """(H, W) float32 optical-axis depth of the table seen through every pixel."""
        u = (np.arange(camera.width, dtype=np.float32) - camera.cx) / camera.fx
        v = (np.arange(camera.height, dtype=np.float32) - camera.cy) / camera.fy
        denominator = 1.0 + self.slope_x * u[None, :] + self.slope_y * v[:, None]
        return (self.distance / denominator).astype(np.float32)
