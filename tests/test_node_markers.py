"""Unit tests of xsam_ros.markers: one-shot and tracked results never share a marker, and each stream
removes only its own vanished markers."""

from __future__ import annotations

import pytest
from visualization_msgs.msg import Marker
from xsam_ros.msg import InstanceMask, InstanceMaskArray

from xsam_ros.markers import ONE_SHOT, TRACKED, MarkerStreams, delete_all, delete_markers, namespaces, result_markers


def _result(ids_with_3d, ids_without_3d=(), sec=1):
    message = InstanceMaskArray()
    message.header.frame_id = "camera_color_optical_frame"
    message.header.stamp.sec = sec
    for instance_id in ids_with_3d:
        instance = InstanceMask(id=instance_id, label="cup", score=0.9, has_3d=True)
        instance.centroid.x, instance.centroid.z = 0.1 * instance_id, 0.6
        instance.extent.x = instance.extent.y = instance.extent.z = 0.05
        message.instances.append(instance)
    for instance_id in ids_without_3d:
        message.instances.append(InstanceMask(id=instance_id, label="bowl", score=0.8, has_3d=False))
    return message


def _keys(array, action):
    return {(marker.ns, marker.id) for marker in array.markers if marker.action == action}


def test_streams_have_their_own_namespaces():
    assert namespaces(ONE_SHOT) == ("xsam/centroid", "xsam/extent", "xsam/label")
    assert namespaces(TRACKED) == ("xsam/tracked/centroid", "xsam/tracked/extent", "xsam/tracked/label")
    with pytest.raises(ValueError, match="unknown marker stream"):
        namespaces("xsam/other")


def test_one_shot_and_tracked_results_with_the_same_ids_do_not_collide():
    # Both results have instance id 1 (one-shot ids start at 1, and so do the tracker's).
    one_shot, one_shot_ids = result_markers(_result([1, 2], ids_without_3d=[3]), None, ONE_SHOT)
    tracked, tracked_ids = result_markers(_result([1]), None, TRACKED)
    assert one_shot_ids == {1, 2} and tracked_ids == {1}  # id 3 has no 3D: no marker
    added_one_shot, added_tracked = _keys(one_shot, Marker.ADD), _keys(tracked, Marker.ADD)
    assert added_one_shot == {(ns, i) for ns in namespaces(ONE_SHOT) for i in (1, 2)}
    assert added_tracked == {(ns, 1) for ns in namespaces(TRACKED)}
    assert not added_one_shot & added_tracked
    # A stream's first result clears its own namespaces only (DELETEALL with ns set).
    assert {(m.ns, m.action) for m in one_shot.markers[:3]} == {(ns, Marker.DELETEALL) for ns in namespaces(ONE_SHOT)}
    assert {(m.ns, m.action) for m in tracked.markers[:3]} == {(ns, Marker.DELETEALL) for ns in namespaces(TRACKED)}


def test_vanished_ids_are_deleted_in_their_own_stream_only():
    _, previous = result_markers(_result([1, 2]), None, ONE_SHOT)
    array, ids = result_markers(_result([1], sec=2), previous, ONE_SHOT)
    assert ids == {1}
    assert _keys(array, Marker.DELETE) == {(ns, 2) for ns in namespaces(ONE_SHOT)}
    assert _keys(array, Marker.DELETEALL) == set()
    # The same id set again: no deletion at all, only the updated markers.
    array, _ = result_markers(_result([1], sec=3), ids, ONE_SHOT)
    assert {marker.action for marker in array.markers} == {Marker.ADD}
    # Tracked stream: id 4 vanishes, id 7 appears.
    array, ids = result_markers(_result([7]), frozenset({4}), TRACKED)
    assert _keys(array, Marker.DELETE) == {(ns, 4) for ns in namespaces(TRACKED)} and ids == {7}
    assert all(marker.ns.startswith("xsam/tracked/") for marker in array.markers)


def test_delete_helpers():
    header = _result([]).header
    assert delete_all(header).ns == "" and delete_all(header).action == Marker.DELETEALL
    markers = delete_markers(header, [5, 2], TRACKED)
    assert [(m.ns, m.id, m.action) for m in markers] == [
        (ns, i, Marker.DELETE) for i in (2, 5) for ns in namespaces(TRACKED)]


def test_marker_streams_remember_each_stream_between_results():
    """What the node's outputs and the bag replay do between results: a stream's first result clears its
    namespaces; a new tracked command clears the tracked stream again; a stopped tracked command deletes
    its ids (and, having none, nothing); reset (~/clear) makes every stream start over."""
    streams = MarkerStreams()
    first = streams.for_result(_result([1, 2]), ONE_SHOT)
    assert _keys(first, Marker.DELETEALL) == {(ns, 0) for ns in namespaces(ONE_SHOT)}
    tracked = streams.for_result(_result([1]), TRACKED)
    assert _keys(tracked, Marker.DELETEALL) == {(ns, 0) for ns in namespaces(TRACKED)}
    again = streams.for_result(_result([1], sec=2), TRACKED)
    assert {m.action for m in again.markers} == {Marker.ADD}
    streams.start_tracked()
    assert _keys(streams.for_result(_result([3]), TRACKED), Marker.DELETEALL) == {(ns, 0) for ns in namespaces(TRACKED)}
    stopped = streams.stop_tracked(_result([]).header)
    assert [(m.ns, m.id, m.action) for m in stopped.markers] == [(ns, 3, Marker.DELETE) for ns in namespaces(TRACKED)]
    assert streams.stop_tracked(_result([]).header) is None
    later = streams.for_result(_result([2], sec=4), ONE_SHOT)  # the one-shot stream still knew {1, 2}
    assert _keys(later, Marker.DELETE) == {(ns, 1) for ns in namespaces(ONE_SHOT)}
    streams.reset()
    assert _keys(streams.for_result(_result([2], sec=5), ONE_SHOT), Marker.DELETEALL) == \
        {(ns, 0) for ns in namespaces(ONE_SHOT)}
