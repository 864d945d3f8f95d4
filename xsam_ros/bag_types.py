"""The message definitions bags are read and written with: a ``rosbags`` typestore, no ROS process.

``bag_typestore()`` holds every type the replay reads or writes (``REPLAY_TYPES``) and the types
they contain, each from the ``.msg`` file its package installed (``share/<package>/msg/<Name>.msg``,
found through the ament index: a ROS 2 installation or the PyPI ROS wheels of ``make setup``).
These are the definitions ``ros2 bag record`` would embed on this machine, so a replayed output
plays back to nodes of the same ROS distribution. ``xsam_ros``'s own messages fall back to the
source tree's ``msg/`` when the package is not installed; a standard type whose package is not
installed falls back to ``rosbags``' definition of the newest ROS 2 distribution.

Type names are ``rosbags``'s: ``"sensor_msgs/msg/Image"``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

from rosbags.interfaces import Nodetype
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

SOURCE_MSG_DIR = Path(__file__).resolve().parents[1] / "msg"

# Inputs (colour, depth, camera_info, commands) and outputs (results, overlay, markers, point clouds).
REPLAY_TYPES = (
    "sensor_msgs/msg/Image",
    "sensor_msgs/msg/CompressedImage",
    "sensor_msgs/msg/CameraInfo",
    "sensor_msgs/msg/PointCloud2",
    "std_msgs/msg/String",
    "visualization_msgs/msg/MarkerArray",
    "xsam_ros/msg/SegmentationCommand",
    "xsam_ros/msg/InstanceMaskArray",
)


def msg_file(typename: str) -> Path | None:
    """The installed ``.msg`` file of ``typename`` ("package/msg/Name"), or None when there is none."""
    package, _, name = typename.split("/")
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            path = Path(get_package_share_directory(package)) / "msg" / f"{name}.msg"
        except (PackageNotFoundError, ValueError):
            path = None
    except ImportError:  # no ament index at all: only the source tree and rosbags' definitions
        path = None
    if (path is None or not path.is_file()) and package == "xsam_ros":
        path = SOURCE_MSG_DIR / f"{name}.msg"
    return path if path is not None and path.is_file() else None


def _named_types(fields) -> Iterable[str]:
    """Type names a parsed definition refers to (nested messages, arrays and sequences of them)."""
    for _, (kind, desc) in fields:
        if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
            kind, desc = desc[0]
        if kind == Nodetype.NAME:
            yield desc


def definitions(typenames: Iterable[str]) -> dict:
    """Parsed definitions (``rosbags`` Typesdict) of ``typenames`` and everything they contain."""
    fallback = None
    found: dict = {}
    pending = list(typenames)
    while pending:
        typename = pending.pop()
        if typename in found:
            continue
        path = msg_file(typename)
        if path is not None:
            parsed = get_types_from_msg(path.read_text(), typename)
        else:
            fallback = fallback or get_typestore(Stores.LATEST)
            if typename not in fallback.fielddefs:
                raise RuntimeError(
                    f"no definition of {typename}: its package is not installed (no share/<package>/msg/*.msg in "
                    "AMENT_PREFIX_PATH) and rosbags does not know it; source the ROS 2 setup or run `make setup`")
            parsed = {typename: fallback.fielddefs[typename]}
        found.update(parsed)
        pending.extend(_named_types(parsed[typename][1]))
    return found


@functools.lru_cache(maxsize=None)
def bag_typestore() -> Typestore:
    """The typestore of ``REPLAY_TYPES`` (built once; see the module docstring)."""
    store = get_typestore(Stores.EMPTY)
    store.register(definitions(REPLAY_TYPES))
    return store


def typename_of(message) -> str:
    """The ``rosbags`` type name of a message: an rclpy message object or class, or a ``rosbags`` one."""
    msgtype = getattr(message, "__msgtype__", None)
    if msgtype is not None:
        return msgtype
    cls = message if isinstance(message, type) else type(message)
    package = cls.__module__.split(".")[0]
    return f"{package}/msg/{cls.__name__}"
