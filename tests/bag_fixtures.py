"""Recorded robot data for the replay tests and bench: tabletop sequences written as rosbag2 bags.

Written with ``rosbags`` alone (its own ROS 2 Kilted definitions, plus xsam_ros/SegmentationCommand
parsed from ``msg/``), independently of ``xsam_ros.bag_types`` / ``bag_messages``, so that a test
reading them with the replay checks that code against another writer.

Every frame of ``frames`` (``Scene`` objects, e.g. ``generate_sequence``) becomes three messages
with the same header (stamp ``FIRST_STAMP_NS + i / FPS``, frame_id ``FRAME_ID``), recorded in
the order a RealSense driver tends to deliver them: camera_info, colour image, then the depth
image ``DEPTH_DELAY_NS`` later (so the replay must look ahead for a frame's depth, as the node
waits for it). The bag's log times are the stamps plus ``RECEIVE_DELAY_NS`` (receive time >
capture time, as ``ros2 bag record`` sees it).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

REPO_ROOT = Path(__file__).resolve().parents[1]
FIRST_STAMP_NS = 1_700_000_000 * 1_000_000_000
FPS = 15
RECEIVE_DELAY_NS = 4_000_000
DEPTH_DELAY_NS = 2_000_000
FRAME_ID = "camera_color_optical_frame"


@dataclasses.dataclass(frozen=True)
class BagTopics:
    image: str = "/camera/color/image_raw"
    depth: str = "/camera/aligned_depth_to_color/image_raw"
    camera_info: str = "/camera/color/camera_info"
    command_text: str = "/xsam/command_text"
    command: str = "/xsam/command"

    def image_topic(self, compressed: bool) -> str:
        return self.image + "/compressed" if compressed else self.image


TOPICS = BagTopics()


def typestore():
    """rosbags' ROS 2 Kilted definitions plus xsam_ros/msg/SegmentationCommand from msg/."""
    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg((REPO_ROOT / "msg" / "SegmentationCommand.msg").read_text(),
                                      "xsam_ros/msg/SegmentationCommand"))
    return store


def frame_stamp_ns(index: int) -> int:
    return FIRST_STAMP_NS + index * 1_000_000_000 // FPS


def header(store, stamp_ns: int, frame_id: str = FRAME_ID):
    types = store.types
    return types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000),
        frame_id=frame_id)


def image(store, rgb: np.ndarray, stamp_ns: int, encoding: str = "bgr8"):
    pixels = rgb[..., ::-1] if encoding == "bgr8" else rgb
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    height, width = pixels.shape[:2]
    return store.types["sensor_msgs/msg/Image"](
        header=header(store, stamp_ns), height=height, width=width, encoding=encoding, is_bigendian=0,
        step=width * 3, data=pixels.reshape(-1))


def compressed_image(store, rgb: np.ndarray, stamp_ns: int, quality: int = 95):
    """JPEG as image_transport's compressed plugin publishes it (format "rgb8; jpeg compressed bgr8")."""
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return store.types["sensor_msgs/msg/CompressedImage"](
        header=header(store, stamp_ns), format="rgb8; jpeg compressed bgr8", data=data.reshape(-1))


def depth_image(store, depth_m: np.ndarray, stamp_ns: int, encoding: str = "16UC1"):
    """16UC1 millimetres or 32FC1 metres (REP-118), little-endian."""
    if encoding == "16UC1":
        values = np.round(np.nan_to_num(depth_m, nan=0.0) * 1000.0).astype("<u2")
    else:
        values = depth_m.astype("<f4")
    height, width = values.shape
    return store.types["sensor_msgs/msg/Image"](
        header=header(store, stamp_ns), height=height, width=width, encoding=encoding, is_bigendian=0,
        step=width * values.itemsize, data=values.view(np.uint8).reshape(-1))


def camera_info(store, camera, stamp_ns: int):
    types = store.types
    return types["sensor_msgs/msg/CameraInfo"](
        header=header(store, stamp_ns), height=camera.height, width=camera.width, distortion_model="plumb_bob",
        d=np.zeros(5), k=camera.matrix.reshape(-1).astype(np.float64), r=np.eye(3).reshape(-1),
        p=np.array([camera.fx, 0.0, camera.cx, 0.0, 0.0, camera.fy, camera.cy, 0.0, 0.0, 0.0, 1.0, 0.0]),
        binning_x=0, binning_y=0,
        roi=types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def string(store, text: str):
    return store.types["std_msgs/msg/String"](data=text)


def write_sequence_bag(
    path: Path,
    frames: list,
    storage: str = "sqlite3",
    compressed: bool = False,
    depth_encoding: str = "16UC1",
    commands: tuple[tuple[int, str], ...] = (),
    corrupt: dict[int, str] | None = None,
    topics: BagTopics = TOPICS,
) -> Path:
    """A rosbag2 bag (directory) of ``frames``; returns ``path``.

    Args:
        storage: "sqlite3" or "mcap".
        compressed: JPEG CompressedImage on ``<image>/compressed`` instead of a raw bgr8 Image.
        commands: (frame index, text) pairs: a std_msgs/String on ``command_text`` recorded just
            before that frame's messages.
        corrupt: frame index -> what is wrong with its colour image: "short" (data one row short
            of step x height), "encoding" (an encoding the node refuses: "yuv422"),
            "garbage" (CompressedImage data that is not JPEG), "cdr" (the serialised message cut
            after 40 bytes: it does not deserialise).
    """
    store = typestore()
    corrupt = corrupt or {}
    plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[storage]
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        def connection(topic, msgtype):
            return writer.add_connection(topic, msgtype, typestore=store)

        info_conn = connection(topics.camera_info, "sensor_msgs/msg/CameraInfo")
        image_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
        image_conn = connection(topics.image_topic(compressed), image_type)
        depth_conn = connection(topics.depth, "sensor_msgs/msg/Image")
        text_conn = connection(topics.command_text, "std_msgs/msg/String") if commands else None
        for index, scene in enumerate(frames):
            stamp = frame_stamp_ns(index)
            received = stamp + RECEIVE_DELAY_NS
            for at, text in commands:
                if at == index:
                    writer.write(text_conn, received - 1_000_000,
                                 store.serialize_cdr(string(store, text), "std_msgs/msg/String"))
            writer.write(info_conn, received, store.serialize_cdr(camera_info(store, scene.camera, stamp),
                                                                  "sensor_msgs/msg/CameraInfo"))
            if compressed:
                message = compressed_image(store, scene.image, stamp)
                if corrupt.get(index) == "garbage":
                    message = dataclasses.replace(message, data=np.frombuffer(os.urandom(2000), np.uint8))
            else:
                message = image(store, scene.image, stamp)
                if corrupt.get(index) == "short":
                    message = dataclasses.replace(message, data=message.data[: -message.step])
                elif corrupt.get(index) == "encoding":
                    message = dataclasses.replace(message, encoding="yuv422")
            data = store.serialize_cdr(message, image_type)
            writer.write(image_conn, received, data[:40] if corrupt.get(index) == "cdr" else data)
            writer.write(depth_conn, received + DEPTH_DELAY_NS, store.serialize_cdr(
                depth_image(store, scene.depth, stamp, depth_encoding), "sensor_msgs/msg/Image"))
    return path


def storage_file(bag: Path) -> Path:
    """The one storage file (.db3 / .mcap) of a rosbag2 directory."""
    (file,) = [p for p in bag.iterdir() if p.suffix in (".db3", ".mcap")]
    return file


def truncate(bag: Path, fraction: float) -> Path:
    """Cut the bag's storage file to ``fraction`` of its length (a recording whose disk filled up)."""
    file = storage_file(bag)
    data = file.read_bytes()
    file.write_bytes(data[: int(len(data) * fraction)])
    return bag
