"""RViz markers for a result: a sphere at each 3D centroid, a cube of its extent and a text label.

All markers use the result's header (camera optical frame, image stamp). Marker ids are the
instance ids, one namespace per kind ("xsam/centroid", "xsam/extent", "xsam/label"), lifetime
0 (until replaced). Whenever the set of instance ids differs from the previous published set,
the array starts with a DELETEALL marker, so objects that disappeared (or a cleared command)
leave no stale markers in RViz.
"""

from __future__ import annotations

from collections.abc import Iterable

from visualization_msgs.msg import Marker, MarkerArray

from xsam_engine.visualization import colour_for

NAMESPACES = ("xsam/centroid", "xsam/extent", "xsam/label")
SPHERE_DIAMETER_M = 0.02
TEXT_HEIGHT_M = 0.03
MIN_EXTENT_M = 0.005


def delete_all(header) -> Marker:
    return Marker(header=header, action=Marker.DELETEALL)


def _colour(instance_id: int, alpha: float):
    from std_msgs.msg import ColorRGBA

    red, green, blue = colour_for(instance_id)
    return ColorRGBA(r=red / 255.0, g=green / 255.0, b=blue / 255.0, a=alpha)


def result_markers(result_msg, previous_ids: Iterable[int] | None) -> tuple[MarkerArray, frozenset[int]]:
    """(MarkerArray, id set) for an InstanceMaskArray; ``previous_ids`` is the set returned last time."""
    header = result_msg.header
    with_3d = [instance for instance in result_msg.instances if instance.has_3d]
    ids = frozenset(int(instance.id) for instance in with_3d)
    markers: list[Marker] = []
    if previous_ids is None or ids != frozenset(previous_ids):
        markers.append(delete_all(header))
    for instance in with_3d:
        position = instance.centroid
        sphere = Marker(header=header, ns=NAMESPACES[0], id=int(instance.id), type=Marker.SPHERE, action=Marker.ADD)
        sphere.pose.position = position
        sphere.pose.orientation.w = 1.0
        sphere.scale.x = sphere.scale.y = sphere.scale.z = SPHERE_DIAMETER_M
        sphere.color = _colour(instance.id, 1.0)

        cube = Marker(header=header, ns=NAMESPACES[1], id=int(instance.id), type=Marker.CUBE, action=Marker.ADD)
        cube.pose.position = position
        cube.pose.orientation.w = 1.0
        cube.scale.x = max(instance.extent.x, MIN_EXTENT_M)
        cube.scale.y = max(instance.extent.y, MIN_EXTENT_M)
        cube.scale.z = max(instance.extent.z, MIN_EXTENT_M)
        cube.color = _colour(instance.id, 0.35)

        text = Marker(header=header, ns=NAMESPACES[2], id=int(instance.id), type=Marker.TEXT_VIEW_FACING,
                      action=Marker.ADD)
        text.pose.position.x = position.x
        # Optical frame: -y is up in the image; put the label just above the object's extent.
        text.pose.position.y = position.y - max(instance.extent.y, MIN_EXTENT_M) / 2 - TEXT_HEIGHT_M
        text.pose.position.z = position.z
        text.pose.orientation.w = 1.0
        text.scale.z = TEXT_HEIGHT_M
        text.color = _colour(instance.id, 1.0)
        text.text = f"#{instance.id} {instance.label} {instance.score:.2f}"
        markers.extend((sphere, cube, text))
    return MarkerArray(markers=markers), ids
