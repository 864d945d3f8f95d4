"""Bag input and MCAP output of the replay tool, without ROS processes (xsam_ros.bag_io, bag_types, bag_messages).

Input bags are written by tests/bag_fixtures.py with rosbags' own definitions (not ours); the
output is read back by three readers that share no code with the writer: ``mcap-ros2-support``
(its own CDR decoder, from the schemas embedded in the file), ``rosbags`` (``AnyReader``, from the
same embedded schemas) and rclpy (``deserialize_message``: the ROS C type support built from the
installed messages, i.e. what ``ros2 bag play`` subscribers get).
"""

from __future__ import annotations

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message

from bag_fixtures import TOPICS, frame_stamp_ns, storage_file, truncate, write_sequence_bag
from xsam_engine.tabletop.sequences import generate_sequence
from xsam_ros import conversions
from xsam_ros.bag_io import BagError, BagInput, McapOutput
from xsam_ros.bag_messages import to_ros, to_rosbags
from xsam_ros.bag_types import REPLAY_TYPES, bag_typestore, msg_file
from xsam_ros.markers import ONE_SHOT, result_markers
from xsam_ros.point_clouds import instance_cloud_msg
from xsam_ros.geometry import object_geometry

from geometry_msgs.msg import Point  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, RegionOfInterest  # noqa: E402
from std_msgs.msg import Header, String  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402
from xsam_ros.msg import InstanceMask, InstanceMaskArray, SegmentationCommand, StageTiming  # noqa: E402

NUM_FRAMES = 5
INPUT_TOPICS = [TOPICS.image, TOPICS.image + "/compressed", TOPICS.depth, TOPICS.camera_info, TOPICS.command_text]


@pytest.fixture(scope="module")
def frames():
    return generate_sequence(3, NUM_FRAMES, 160, 120)


@pytest.fixture(scope="module")
def bags(frames, tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    return {
        "sqlite3": write_sequence_bag(root / "sqlite3", frames, "sqlite3", commands=((0, "track the red cup"),)),
        "mcap": write_sequence_bag(root / "mcap", frames, "mcap", depth_encoding="32FC1"),
        "compressed": write_sequence_bag(root / "compressed", frames, "mcap", compressed=True),
    }


def header(sec: int, nanosec: int = 0, frame_id: str = "camera_color_optical_frame") -> Header:
    result = Header(frame_id=frame_id)
    result.stamp.sec, result.stamp.nanosec = sec, nanosec
    return result


# -- definitions --------------------------------------------------------------------------------


def test_typestore_holds_the_installed_definitions_ours_included():
    store = bag_typestore()
    for typename in REPLAY_TYPES:
        assert typename in store.fielddefs
        assert msg_file(typename) is not None, f"{typename}: no installed .msg file"
    # Our messages as written in msg/*.msg: field names in order, constants included.
    names = [name for name, _ in store.fielddefs["xsam_ros/msg/InstanceMask"][1]]
    assert names == ["id", "label", "class_id", "score", "phrase", "roi", "mask", "area", "has_3d", "centroid",
                     "extent", "depth_pixels"]
    constants = {name: value for name, _, value in store.fielddefs["xsam_ros/msg/InstanceMaskArray"][0]}
    assert constants["LABEL_IMAGE_INSTANCE"] == 3
    assert "StageTiming" in store.generate_msgdef("xsam_ros/msg/InstanceMaskArray", ros_version=2)[0]


def test_definitions_come_from_the_installed_packages_else_rosbags_else_a_clear_error():
    """Installed .msg files first (what ros2 bag record embeds here); a type whose package is not
    installed (nav_msgs is not among the ROS wheels of make setup) from rosbags' newest ROS 2
    definitions, its installed dependencies still from their .msg files; an unknown type is refused
    with what to do."""
    from xsam_ros.bag_types import definitions

    assert msg_file("nav_msgs/msg/Odometry") is None and msg_file("geometry_msgs/msg/Pose") is not None
    found = definitions(["nav_msgs/msg/Odometry"])
    assert {"nav_msgs/msg/Odometry", "geometry_msgs/msg/PoseWithCovariance", "std_msgs/msg/Header"} <= set(found)
    assert [name for name, _ in found["nav_msgs/msg/Odometry"][1]] == ["header", "child_frame_id", "pose", "twist"]
    with pytest.raises(RuntimeError, match="no definition of nope_msgs/msg/Thing: its package is not installed"):
        definitions(["nope_msgs/msg/Thing"])


def sample_messages(frames) -> list[tuple[str, object]]:
    """One message of every output type and of the command types, with every kind of field set."""
    scene = frames[0]
    stamp = header(1_700_000_000, 66_666_666)
    ids, geometries, instances = [], [], []
    for index, item in enumerate(scene.objects[:2]):
        mask = scene.mask(item.instance_id)
        rows, cols = np.nonzero(mask)
        y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        crop = np.where(mask[y0:y1, x0:x1], 255, 0).astype(np.uint8)
        geometry = object_geometry(mask, scene.depth, scene.camera.matrix)
        instance = InstanceMask(id=index + 1, label=item.name, class_id=index, score=0.875 - index / 8, phrase=item.name,
                                roi=RegionOfInterest(x_offset=int(x0), y_offset=int(y0), width=int(x1 - x0),
                                                     height=int(y1 - y0)),
                                mask=conversions.mono8_msg(crop, stamp), area=int(mask.sum()), has_3d=True,
                                depth_pixels=geometry.num_points)
        instance.centroid.x, instance.centroid.y, instance.centroid.z = (float(v) for v in geometry.centroid)
        instance.extent.x, instance.extent.y, instance.extent.z = (float(v) for v in geometry.extent)
        ids.append(index + 1)
        geometries.append(geometry)
        instances.append(instance)
    result = InstanceMaskArray(
        header=stamp, request_id="r1", task=InstanceMaskArray.LABEL_IMAGE_NONE + 1, prompt="track the red cup",
        success=True, message="", score_threshold=0.875, mask_threshold=0.5, overlap_threshold=0.75,
        image_width=scene.width, image_height=scene.height, tracking=True, instances=instances,
        vocabulary=["red cup"], label_image_type=InstanceMaskArray.LABEL_IMAGE_INSTANCE,
        label_image=conversions.mono16_label_msg(scene.instance_map.astype(np.uint16), stamp),
        timings=[StageTiming(stage="decoder", milliseconds=12.5), StageTiming(stage="depth_3d", milliseconds=0.25)])
    markers, _ = result_markers(result, None, ONE_SHOT)
    command = SegmentationCommand(header=stamp, request_id="c", task=SegmentationCommand.TASK_VGD,
                                  points=[Point(x=3.0, y=4.0)], point_labels=[1], boxes=[RegionOfInterest(width=5, height=6)],
                                  vocabulary=["cup", "bowl"], continuous=True, score_threshold=0.25)  # float32 fields: exact binary values
    info = CameraInfo(header=stamp, width=scene.width, height=scene.height, d=[0.0] * 5,
                      k=[float(v) for v in scene.camera.matrix.reshape(-1)])
    return [
        ("/xsam/instances", result),
        ("/xsam/overlay", conversions.rgb_to_image_msg(scene.image, stamp)),
        ("/xsam/markers", markers),
        ("/xsam/instance_points", instance_cloud_msg(stamp, ids, geometries)),
        ("/xsam/command", command),
        ("/xsam/command_text", String(data="grasp the red cup")),
        ("/camera/color/camera_info", info),
        ("/camera/color/image_raw/compressed", CompressedImage(header=stamp, format="jpeg", data=b"\xff\xd8\xff")),
    ]


def as_ros_delivers(message):
    return deserialize_message(serialize_message(message), type(message))


def test_rosbags_and_ros_messages_convert_both_ways_unchanged(frames):
    """Every kind of field (nested, sequences of messages, uint8 / int8 / float64 arrays, fixed arrays,
    strings, string lists, bools, constants) survives rclpy -> rosbags -> CDR -> rosbags -> rclpy,
    and rclpy's own deserialiser reads rosbags' bytes as the same message. The reference is what ROS
    itself makes of the message (rclpy's serialise + deserialise: float32 fields rounded once)."""
    store = bag_typestore()
    for topic, message in sample_messages(frames):
        typename = f"{type(message).__module__.split('.')[0]}/msg/{type(message).__name__}"
        expected = as_ros_delivers(message)
        raw = bytes(store.serialize_cdr(to_rosbags(message, store), typename))
        assert deserialize_message(raw, type(message)) == expected, topic
        assert to_ros(store.deserialize_cdr(raw, typename), store) == expected, topic


def test_output_decodes_with_three_independent_readers(frames, tmp_path):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    from rosbags.highlevel import AnyReader

    path = tmp_path / "out.mcap"
    messages = sample_messages(frames)
    with McapOutput(path) as output:
        for index, (topic, message) in enumerate(messages):
            output.write(topic, message, 1_700_000_000_070_000_000 + index)
    # mcap-ros2-support: schemas are ros2msg definitions, every message decodes, values as written.
    with open(path, "rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == "ros2"
        decoded = {channel.topic: (schema, message, value) for schema, channel, message, value
                   in reader.iter_decoded_messages()}
    assert list(decoded) == [topic for topic, _ in messages]
    schema, record, result = decoded["/xsam/instances"]
    assert (schema.name, schema.encoding) == ("xsam_ros/msg/InstanceMaskArray", "ros2msg")
    assert record.log_time == 1_700_000_000_070_000_000
    original = messages[0][1]
    assert (result.header.stamp.sec, result.header.stamp.nanosec) == (1_700_000_000, 66_666_666)
    assert [(i.id, i.label, i.area) for i in result.instances] == [(i.id, i.label, i.area) for i in original.instances]
    assert bytes(result.instances[1].mask.data) == bytes(original.instances[1].mask.data)
    assert result.instances[0].centroid.z == pytest.approx(original.instances[0].centroid.z)
    assert [(t.stage, t.milliseconds) for t in result.timings] == [("decoder", 12.5), ("depth_3d", 0.25)]
    _, _, cloud = decoded["/xsam/instance_points"]
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "instance_id"]
    assert bytes(cloud.data) == bytes(messages[3][1].data)
    _, _, command = decoded["/xsam/command"]
    assert (list(command.vocabulary), list(command.point_labels), command.continuous) == (["cup", "bowl"], [1], True)
    # rosbags, from the same file; rclpy's C type support on the raw bytes.
    with AnyReader([path]) as reader:
        assert {topic: info.msgtype for topic, info in reader.topics.items()}["/xsam/markers"] == \
            "visualization_msgs/msg/MarkerArray"
        for (connection, _, raw), (topic, message) in zip(reader.messages(), messages):
            assert connection.topic == topic
            value = reader.deserialize(raw, connection.msgtype)
            assert to_ros(value, reader.typestore) == as_ros_delivers(message), topic
            assert deserialize_message(raw, type(message)) == as_ros_delivers(message), topic


# -- input --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, path", [("sqlite3", None), ("mcap", None), ("mcap", "file"), ("sqlite3", "file"),
                                        ("compressed", None)])
def test_bags_of_every_storage_read_in_bag_order(bags, frames, kind, path):
    """rosbag2 directories (sqlite3, mcap storage) and their single storage files: every message in
    log-time order, as the node's message classes, with the recorded stamps and pixels."""
    bag = bags[kind] if path is None else storage_file(bags[kind])
    with BagInput(bag) as source:
        assert not source.warnings
        compressed = kind == "compressed"
        image_topic = TOPICS.image_topic(compressed)
        assert source.topics[image_topic].count == NUM_FRAMES
        records = list(source.records(INPUT_TOPICS))
        assert source.stopped_early == ""
    assert [r.log_time_ns for r in records] == sorted(r.log_time_ns for r in records)
    assert all(r.error == "" for r in records)
    images = [r.message for r in records if r.topic == image_topic]
    assert all(isinstance(m, CompressedImage if compressed else Image) for m in images)
    assert [conversions.stamp_ns(m.header) for m in images] == [frame_stamp_ns(i) for i in range(NUM_FRAMES)]
    for frame, message in zip(frames, images):
        if compressed:  # JPEG quality 95 of small textured images: close, not equal
            assert np.abs(conversions.compressed_to_rgb(message).astype(int) - frame.image).mean() < 8.0
        else:
            np.testing.assert_array_equal(conversions.image_to_rgb(message), frame.image)
    depths = [r.message for r in records if r.topic == TOPICS.depth]
    tolerance = 0.0 if kind == "mcap" else 0.0005  # 32FC1 exact; 16UC1 rounds to the millimetre
    np.testing.assert_allclose(conversions.depth_to_metres(depths[2]), frames[2].depth, atol=tolerance + 1e-7)
    infos = [r.message for r in records if r.topic == TOPICS.camera_info]
    np.testing.assert_array_equal(conversions.camera_matrix(infos[0], (160, 120)), frames[0].camera.matrix)
    if kind == "sqlite3":
        (text,) = [r.message for r in records if r.topic == TOPICS.command_text]
        assert isinstance(text, String) and text.data == "track the red cup"


def test_a_missing_or_mistyped_topic_names_what_the_bag_holds(bags):
    with BagInput(bags["compressed"]) as source:
        with pytest.raises(BagError) as missing:
            source.require(TOPICS.image, ["sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"], "--image-topic")
        with pytest.raises(BagError) as mistyped:
            source.require(TOPICS.camera_info, ["sensor_msgs/msg/Image"], "--depth-topic")
    text = str(missing.value)
    assert "--image-topic /camera/color/image_raw: the bag has no such topic" in text
    assert "(did you mean /camera/color/image_raw/compressed or /camera/aligned_depth_to_color/image_raw?)" in text
    listing = text.split(" holds:\n", 1)[1].splitlines()
    assert [line.split() for line in listing] == [
        ["/camera/aligned_depth_to_color/image_raw", "sensor_msgs/msg/Image", "(5", "messages)"],
        ["/camera/color/camera_info", "sensor_msgs/msg/CameraInfo", "(5", "messages)"],
        ["/camera/color/image_raw/compressed", "sensor_msgs/msg/CompressedImage", "(5", "messages)"]]
    assert "holds sensor_msgs/msg/CameraInfo, expected sensor_msgs/msg/Image" in str(mistyped.value)


def test_paths_that_are_not_bags_are_refused_clearly(tmp_path, bags):
    with pytest.raises(BagError, match="no such file or directory; give a rosbag2 bag directory"):
        BagInput(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BagError, match="cannot be read as a bag"):
        BagInput(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="cannot be read as a bag"):
        BagInput(tmp_path / "empty")


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_a_truncated_bag(tmp_path, storage):
    """A recording cut in half (power lost, disk full). MCAP: the messages before the cut are read
    (file order) and a warning says what happened; sqlite3 cannot be salvaged: a clear error that
    says what to try. 10 frames of 320x240 (about 4 MCAP chunks of 1 MiB: whole chunks survive)."""
    frames = generate_sequence(3, 10, 320, 240)
    bag = truncate(write_sequence_bag(tmp_path / storage, frames, storage), 0.5)
    if storage == "sqlite3":
        with pytest.raises(BagError, match=r"database disk image is malformed; the sqlite3 file is damaged .* "
                                           r"\.recover"):
            BagInput(bag)
        return
    with BagInput(bag) as source:
        (warning,) = source.warnings
        records = list(source.records(INPUT_TOPICS))
    assert "is damaged" in warning and "cut short" in warning and "the rest is lost" in warning
    images = [r.message for r in records if r.topic == TOPICS.image]
    # Half of the bytes: about half of the frames (whole chunks only), each intact.
    assert 2 <= len(images) <= 6 and all(r.error == "" for r in records)
    for index, message in enumerate(images):
        assert conversions.stamp_ns(message.header) == frame_stamp_ns(index)
        np.testing.assert_array_equal(conversions.image_to_rgb(message), frames[index].image)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_a_message_that_does_not_deserialise_is_reported_and_the_rest_read(frames, tmp_path, storage):
    bag = write_sequence_bag(tmp_path / storage, frames, storage, corrupt={2: "cdr"})
    with BagInput(bag) as source:
        records = list(source.records(INPUT_TOPICS))
        assert source.stopped_early == ""
    images = [r for r in records if r.topic == TOPICS.image]
    assert len(images) == NUM_FRAMES and len(records) == 3 * NUM_FRAMES
    (bad,) = [r for r in images if r.error]
    assert bad.message is None and bad.log_time_ns == images[2].log_time_ns
    assert "cannot deserialise the sensor_msgs/msg/Image recorded at" in bad.error
    assert all(r.message is not None for r in records if r is not bad)
