"""RViz markers for a result: a sphere at each 3D centroid, a cube of its extent and a text label.

All markers use the result's header (camera optical frame, image stamp), lifetime 0 (until
replaced or deleted), and id = the instance id. Two streams never share a marker:

- one-shot results (a command answered once, a click): namespaces ``xsam/centroid``,
  ``xsam/extent``, ``xsam/label``; ids 1..N of that result;
- tracked results (a continuous command, its first answer included): namespaces
  ``xsam/tracked/centroid``, ``xsam/tracked/extent``, ``xsam/tracked/label``; ids are the
  tracker's stable ids.

Each stream remembers the ids it last published: ids that disappeared are removed with DELETE
markers of that stream only (so a one-shot answer never erases the tracked object's markers, nor
the other way round); before a stream's first result (or after ``~/clear``) a DELETEALL per
namespace of the stream clears what an earlier run of the node may have left. ``~/clear``
publishes one DELETEALL without namespace (``delete_all``): every marker of the display.
"""

from __future__ import annotations

from collections.abc import Iterable

from visualization_msgs.msg import Marker, MarkerArray

from xsam_engine.visualization import colour_for

ONE_SHOT = "xsam"
TRACKED = "xsam/tracked"
STREAMS = (ONE_SHOT, TRACKED)
KINDS = ("centroid", "extent", "label")
SPHERE_DIAMETER_M = 0.02
TEXT_HEIGHT_M = 0.03
MIN_EXTENT_M = 0.005


def namespaces(stream: str) -> tuple[str, str, str]:
    """(centroid, extent, label) namespaces of a stream (``ONE_SHOT`` or ``TRACKED``)."""
    if stream not in STREAMS:
        raise ValueError(f"unknown marker stream {stream!r}; use one of {STREAMS}")
    return tuple(f"{stream}/{kind}" for kind in KINDS)  # type: ignore[return-value]


def delete_all(header, namespace: str = "") -> Marker:
    """DELETEALL: every marker of the display, or (RViz 2) only those of ``namespace``."""
    return Marker(header=header, ns=namespace, action=Marker.DELETEALL)


def delete_markers(header, ids: Iterable[int], stream: str) -> list[Marker]:
    """DELETE markers for the given ids in every namespace of ``stream``."""
    return [Marker(header=header, ns=namespace, id=int(marker_id), action=Marker.DELETE)
            for marker_id in sorted(ids) for namespace in namespaces(stream)]


def _colour(instance_id: int, alpha: float):
    from std_msgs.msg import ColorRGBA

    red, green, blue = colour_for(instance_id)
    return ColorRGBA(r=red / 255.0, g=green / 255.0, b=blue / 255.0, a=alpha)


def result_markers(
    result_msg, previous_ids: Iterable[int] | None, stream: str = ONE_SHOT
) -> tuple[MarkerArray, frozenset[int]]:
    """(MarkerArray, id set) for an InstanceMaskArray in ``stream``.

    ``previous_ids`` is the id set this function returned last time for the same stream (None
    before the first result or after ``~/clear``). Instances without 3D get no marker.
    """
    header = result_msg.header
    centroid_ns, extent_ns, label_ns = namespaces(stream)
    with_3d = [instance for instance in result_msg.instances if instance.has_3d]
    ids = frozenset(int(instance.id) for instance in with_3d)
    if previous_ids is None:
        markers = [delete_all(header, namespace) for namespace in (centroid_ns, extent_ns, label_ns)]
    else:
        markers = delete_markers(header, frozenset(previous_ids) - ids, stream)
    for instance in with_3d:
        position = instance.centroid
        sphere = Marker(header=header, ns=centroid_ns, id=int(instance.id), type=Marker.SPHERE, action=Marker.ADD)
        sphere.pose.position = position
        sphere.pose.orientation.w = 1.0
        sphere.scale.x = sphere.scale.y = sphere.scale.z = SPHERE_DIAMETER_M
        sphere.color = _colour(instance.id, 1.0)

        cube = Marker(header=header, ns=extent_ns, id=int(instance.id), type=Marker.CUBE, action=Marker.ADD)
        cube.pose.position = position
        cube.pose.orientation.w = 1.0
        cube.scale.x = max(instance.extent.x, MIN_EXTENT_M)
        cube.scale.y = max(instance.extent.y, MIN_EXTENT_M)
        cube.scale.z = max(instance.extent.z, MIN_EXTENT_M)
        cube.color = _colour(instance.id, 0.35)

        text = Marker(header=header, ns=label_ns, id=int(instance.id), type=Marker.TEXT_VIEW_FACING,
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


class MarkerStreams:
    """The ids each stream last published: what ``result_markers`` and ``delete_markers`` need between results.

    The node's outputs and the bag replay keep one each, so that both emit the same marker sequence.
    Not thread-safe (the node holds its publish lock around it).
    """

    def __init__(self) -> None:
        self._ids: dict[str, frozenset[int] | None] = dict.fromkeys(STREAMS)  # None = clear the stream first

    def reset(self) -> None:
        """Forget every stream (after ``~/clear``'s DELETEALL): the next result clears its stream first."""
        self._ids = dict.fromkeys(STREAMS)

    def start_tracked(self) -> None:
        """A new tracked command's first result is next: it clears the previous tracked markers."""
        self._ids[TRACKED] = None

    def for_result(self, result_msg, stream: str) -> MarkerArray:
        """The markers of an InstanceMaskArray in ``stream`` (ONE_SHOT or TRACKED); remembers its ids."""
        markers, self._ids[stream] = result_markers(result_msg, self._ids[stream], stream)
        return markers

    def stop_tracked(self, header) -> MarkerArray | None:
        """DELETE markers of the tracked stream (a failed continuous command stopped it); None if it had none."""
        ids, self._ids[TRACKED] = self._ids[TRACKED], None
        return MarkerArray(markers=delete_markers(header, ids, TRACKED)) if ids else None
