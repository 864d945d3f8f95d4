"""Per-instance point clouds for grasp planners: sensor_msgs/PointCloud2 from the 3D estimates.

The points of an instance are exactly the inlier points its centroid and extent were computed
from (``geometry.ObjectGeometry.points``: the mask's pixels with valid depth, back-projected,
after outlier rejection), so cloud and centroid always agree and nothing is computed twice.

Layout (one cloud per image, all instances with 3D together):

- frame: the camera optical frame of the image (REP-103: x right, y down, z forward); the header
  is a copy of the image's (stamp and frame_id);
- ``height`` 1, ``width`` = number of points (an unorganised cloud), ``is_dense`` true (every
  point is finite), little-endian;
- fields, 16 bytes a point: ``x``, ``y``, ``z`` float32 metres at offsets 0, 4, 8 and
  ``instance_id`` uint32 at offset 12 (``InstanceMask.id`` of the instance the point belongs
  to; select one object with ``instance_id == k``, or colour by it in Foxglove / RViz).

An image whose instances have no 3D gives a cloud with zero points (so a viewer clears it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField

from .conversions import copy_header
from .geometry import ObjectGeometry

POINT_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("instance_id", "<u4")])
POINT_FIELDS = (
    ("x", 0, PointField.FLOAT32),
    ("y", 4, PointField.FLOAT32),
    ("z", 8, PointField.FLOAT32),
    ("instance_id", 12, PointField.UINT32),
)


def instance_points(instance_ids: Sequence[int], geometries: Sequence[ObjectGeometry | None]) -> np.ndarray:
    """(N,) structured array (``POINT_DTYPE``) of every instance's inlier points, instance by instance.

    Args:
        instance_ids: ``InstanceMask.id`` per instance.
        geometries: the 3D estimate per instance, None where it has none (contributes no point).
    """
    if len(instance_ids) != len(geometries):
        raise ValueError(f"{len(instance_ids)} instance ids for {len(geometries)} geometries; give one id per instance")
    parts = []
    for instance_id, geometry in zip(instance_ids, geometries):
        if geometry is None or len(geometry.points) == 0:
            continue
        part = np.empty(len(geometry.points), POINT_DTYPE)
        part["x"], part["y"], part["z"] = (geometry.points[:, axis] for axis in range(3))
        part["instance_id"] = int(instance_id)
        parts.append(part)
    return np.concatenate(parts) if parts else np.empty(0, POINT_DTYPE)


def point_cloud_msg(points: np.ndarray, header) -> PointCloud2:
    """sensor_msgs/PointCloud2 of a ``POINT_DTYPE`` array, with a copy of ``header``."""
    import array

    points = np.ascontiguousarray(points, dtype=POINT_DTYPE)
    data = array.array("B")
    data.frombytes(points.tobytes())
    return PointCloud2(
        header=copy_header(header), height=1, width=len(points),
        fields=[PointField(name=name, offset=offset, datatype=kind, count=1) for name, offset, kind in POINT_FIELDS],
        is_bigendian=False, point_step=POINT_DTYPE.itemsize, row_step=POINT_DTYPE.itemsize * len(points),
        data=data, is_dense=True)


def instance_cloud_msg(header, instance_ids: Sequence[int], geometries: Sequence[ObjectGeometry | None]) -> PointCloud2:
    """The per-instance cloud of one result (see the module docstring)."""
    return point_cloud_msg(instance_points(instance_ids, geometries), header)

