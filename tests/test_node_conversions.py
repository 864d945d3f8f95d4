"""Unit tests of xsam_ros.conversions: images (every encoding, padding, byte order, bad sizes),
depth (16UC1 millimetres, 32FC1 metres), compressed images, commands and result messages."""

from __future__ import annotations

import math
import sys

import cv2
import numpy as np
import pytest
from geometry_msgs.msg import Point, Point32, Polygon
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header
from xsam_ros.msg import InstanceMaskArray, SegmentationCommand

from xsam_engine.requests import SegmentationRequest, Task, VisualPrompt
from xsam_engine.results import Instance, SegmentationResult
from xsam_ros import conversions
from xsam_ros.conversions import ConversionError, ThresholdOverrides
from xsam_ros.geometry import ObjectGeometry

RNG = np.random.default_rng(3)
RGB = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)  # odd sizes catch stride mistakes
THRESHOLDS = ThresholdOverrides(score=0.5)  # the node's parameters: score set, mask / overlap = model default
VOCABULARY = ("cup", "bowl")
STUFF = ("table",)


def make_image(encoding: str, pixels: np.ndarray, padding: int = 0, big_endian: int = 0, drop_last_padding=False):
    height, width = pixels.shape[:2]
    rows = np.ascontiguousarray(pixels).reshape(height, -1).view(np.uint8)
    if padding:
        rows = np.concatenate([rows, np.full((height, padding), 0xAB, np.uint8)], axis=1)
    data = rows.tobytes()
    if drop_last_padding and padding:
        data = data[:-padding]
    return Image(height=height, width=width, encoding=encoding, is_bigendian=big_endian, step=rows.shape[1], data=data)


def encoded(encoding: str) -> np.ndarray:
    if encoding == "rgb8":
        return RGB
    if encoding == "bgr8":
        return RGB[..., ::-1]
    if encoding == "rgba8":
        return np.concatenate([RGB, np.full((5, 7, 1), 9, np.uint8)], axis=2)
    if encoding == "bgra8":
        return np.concatenate([RGB[..., ::-1], np.full((5, 7, 1), 9, np.uint8)], axis=2)
    raise ValueError(encoding)


# -- colour images -------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
@pytest.mark.parametrize("padding", [0, 3])
@pytest.mark.parametrize("big_endian", [0, 1])
def test_colour_encodings_give_rgb(encoding, padding, big_endian):
    msg = make_image(encoding, encoded(encoding), padding, big_endian)
    rgb = conversions.image_to_rgb(msg)
    assert rgb.dtype == np.uint8 and rgb.shape == (5, 7, 3) and rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, RGB)


@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
def test_mono_is_replicated_to_three_channels(encoding):
    grey = RGB[..., 0]
    rgb = conversions.image_to_rgb(make_image(encoding, grey[..., None], padding=1))
    np.testing.assert_array_equal(rgb, np.repeat(grey[..., None], 3, axis=2))


def test_missing_padding_after_the_last_row_is_accepted():
    msg = make_image("rgb8", RGB, padding=4, drop_last_padding=True)
    np.testing.assert_array_equal(conversions.image_to_rgb(msg), RGB)


def test_result_does_not_alias_the_message_buffer():
    msg = make_image("rgb8", RGB)
    rgb = conversions.image_to_rgb(msg)
    rgb[0, 0] = 0  # must be writable and independent of msg.data
    assert conversions.image_to_rgb(msg)[0, 0].tolist() == RGB[0, 0].tolist()


@pytest.mark.parametrize("msg, message_part", [
    (Image(height=4, width=4, encoding="yuv422", step=8, data=bytes(32)), "unsupported image encoding 'yuv422'"),
    (Image(height=0, width=0, encoding="rgb8", step=0, data=b""), "width and height must be positive"),
    (Image(height=4, width=0, encoding="rgb8", step=0, data=b""), "width and height must be positive"),
    (Image(height=4, width=4, encoding="rgb8", step=12, data=bytes(47)), "data has 47 bytes, expected step x height = 48"),
    (Image(height=4, width=4, encoding="rgb8", step=12, data=bytes(60)), "data has 60 bytes"),
    (Image(height=4, width=4, encoding="rgb8", step=4, data=bytes(16)), "step 4 is smaller than a row"),
    (Image(height=4, width=4, encoding="mono8", step=4, data=bytes(48)), "data has 48 bytes"),
])
def test_bad_images_raise_clear_errors(msg, message_part):
    with pytest.raises(ConversionError) as error:
        conversions.image_to_rgb(msg)
    assert message_part in str(error.value)


def test_huge_image_is_rejected_before_reading_data():
    msg = Image(height=100_000, width=100_000, encoding="rgb8", step=300_000, data=b"")
    with pytest.raises(ConversionError, match="more than max_image_pixels=8294400"):
        conversions.image_to_rgb(msg, max_pixels=8294400)


# -- depth ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("big_endian", [0, 1])
@pytest.mark.parametrize("padding", [0, 2])
def test_depth_16uc1_millimetres(big_endian, padding):
    millimetres = np.array([[0, 1, 1000], [2500, 65535, 700]], dtype=np.uint16)
    raw = millimetres.astype(">u2" if big_endian else "<u2")
    msg = make_image("16UC1", raw[..., None], padding=padding, big_endian=big_endian)
    depth = conversions.depth_to_metres(msg)
    assert depth.dtype == np.float32 and depth.shape == (2, 3)
    assert math.isnan(depth[0, 0])  # 0 = no measurement
    np.testing.assert_allclose(depth[0, 1:], [0.001, 1.0], rtol=1e-6)
    np.testing.assert_allclose(depth[1], [2.5, 65.535, 0.7], rtol=1e-6)


@pytest.mark.parametrize("big_endian", [0, 1])
def test_depth_32fc1_metres_with_invalid_values(big_endian):
    metres = np.array([[0.5, np.nan, np.inf], [0.0, -1.0, 2.25]], dtype=np.float32)
    msg = make_image("32FC1", metres.astype(">f4" if big_endian else "<f4")[..., None], big_endian=big_endian)
    depth = conversions.depth_to_metres(msg)
    assert depth[0, 0] == 0.5 and depth[1, 2] == 2.25
    assert np.isnan(depth[[0, 0, 1, 1], [1, 2, 0, 1]]).all()


def test_depth_bad_encoding_and_size():
    with pytest.raises(ConversionError, match="unsupported depth encoding 'rgb8'"):
        conversions.depth_to_metres(make_image("rgb8", RGB))
    with pytest.raises(ConversionError, match="data has 10 bytes"):
        conversions.depth_to_metres(Image(height=2, width=3, encoding="16UC1", step=6, data=bytes(10)))


# -- compressed ----------------------------------------------------------------------------------


@pytest.mark.parametrize("extension", [".png", ".jpg"])
def test_compressed_images_decode_to_rgb(extension):
    image = np.zeros((32, 48, 3), np.uint8)
    image[:, :24] = (200, 30, 20)  # red left half (RGB)
    image[:, 24:] = (20, 40, 210)
    ok, buffer = cv2.imencode(extension, image[..., ::-1])
    assert ok
    msg = CompressedImage(format="rgb8; png compressed bgr8" if extension == ".png" else "jpeg", data=buffer.tobytes())
    rgb = conversions.compressed_to_rgb(msg)
    assert rgb.shape == (32, 48, 3)
    difference = np.abs(rgb.astype(int) - image)
    if extension == ".png":
        assert difference.max() == 0
    else:  # lossy: compare away from the colour edge
        assert difference[:, :16].max() <= 12 and difference[:, 32:].max() <= 12


def test_compressed_garbage_and_limits():
    with pytest.raises(ConversionError, match="could not be decoded"):
        conversions.compressed_to_rgb(CompressedImage(format="jpeg", data=b"not a jpeg at all"))
    with pytest.raises(ConversionError, match="no data"):
        conversions.compressed_to_rgb(CompressedImage(format="jpeg", data=b""))
    with pytest.raises(ConversionError, match="depth format"):
        conversions.compressed_to_rgb(CompressedImage(format="16UC1; compressedDepth png", data=b"x"))
    ok, buffer = cv2.imencode(".png", np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(ConversionError, match="max_image_pixels=100"):
        conversions.compressed_to_rgb(CompressedImage(format="png", data=buffer.tobytes()), max_pixels=100)


# -- one acceptance rule for raw and compressed images ----------------------------------------------

GREY = RGB[..., 0]
ALPHA = np.full((5, 7, 1), 9, np.uint8)
RGB16 = (RGB.astype(np.uint16) * 257 + 3)  # 16-bit data that 8 bits cannot hold (the +3 is below 1/256)


def _raw(encoding: str, pixels: np.ndarray, big_endian: int = 0) -> Image:
    return make_image(encoding, pixels if pixels.ndim == 3 else pixels[..., None], big_endian=big_endian)


def _png(bgr_or_grey: np.ndarray) -> CompressedImage:
    ok, buffer = cv2.imencode(".png", bgr_or_grey)
    assert ok
    return CompressedImage(format="png", data=buffer.tobytes())


# The same picture, raw and as a PNG (OpenCV encodes BGR(A) channel order): (raw, compressed, RGB or None).
SAME_PICTURE = {
    "colour 8-bit": (_raw("rgb8", RGB), _png(RGB[..., ::-1]), RGB),
    "colour + alpha 8-bit": (_raw("rgba8", np.concatenate([RGB, ALPHA], axis=2)),
                             _png(np.concatenate([RGB[..., ::-1], ALPHA], axis=2)), RGB),
    "grey 8-bit": (_raw("mono8", GREY), _png(GREY), np.repeat(GREY[..., None], 3, axis=2)),
    "colour 16-bit": (_raw("rgb16", RGB16), _png(RGB16[..., ::-1]), None),
    "colour + alpha 16-bit": (_raw("rgba16", np.concatenate([RGB16, RGB16[..., :1]], axis=2)),
                              _png(np.concatenate([RGB16[..., ::-1], RGB16[..., :1]], axis=2)), None),
    "grey 16-bit": (_raw("mono16", RGB16[..., 0]), _png(RGB16[..., 0]), None),
}
ACCEPTED = ("the node takes 8-bit images: rgb8, bgr8, rgba8, bgra8, mono8, 8UC1 (alpha is ignored, grey is "
            "replicated to RGB), raw or as JPEG / PNG on <image>/compressed")


@pytest.mark.parametrize("name", list(SAME_PICTURE))
def test_raw_and_compressed_paths_accept_and_refuse_the_same_pictures(name):
    raw, compressed, expected = SAME_PICTURE[name]
    if expected is not None:
        np.testing.assert_array_equal(conversions.image_to_rgb(raw), expected)
        np.testing.assert_array_equal(conversions.compressed_to_rgb(compressed), expected)  # PNG is lossless
        conversions.check_image_message(raw)
        conversions.check_image_message(compressed)
        return
    # Refused on both paths, with the same wording; before, cv2.IMREAD_COLOR silently made the PNG 8-bit.
    errors = []
    for convert, msg in ((conversions.image_to_rgb, raw), (conversions.compressed_to_rgb, compressed)):
        with pytest.raises(ConversionError) as error:
            convert(msg)
        errors.append(str(error.value))
    raw_error, compressed_error = errors
    assert raw_error.startswith(f"unsupported image encoding {raw.encoding!r}; " + ACCEPTED)
    assert compressed_error.startswith("unsupported image encoding ") and ACCEPTED in compressed_error
    assert raw_error.split("; ", 1)[1] == compressed_error.split("; ", 1)[1]
    assert "a 16-bit PNG" in compressed_error


@pytest.mark.parametrize("encoding, expected", [
    ("yuv422", "unsupported image encoding 'yuv422'; the node takes 8-bit images"),
    ("bayer_rggb8", "unsupported image encoding 'bayer_rggb8'"),
    ("32FC3", "unsupported image encoding '32FC3'"),
])
def test_other_raw_encodings_are_refused_with_the_same_wording(encoding, expected):
    msg = Image(height=2, width=2, encoding=encoding, step=8, data=bytes(16))
    for check in (conversions.image_to_rgb, conversions.check_image_message):
        with pytest.raises(ConversionError, match=expected):
            check(msg)


def test_low_bit_depth_grey_png_and_grey_jpeg_are_8_bit_grey():
    from PIL import Image as PilImage
    import io

    bits = (np.arange(35).reshape(5, 7) % 2).astype(bool)
    buffer = io.BytesIO()
    PilImage.fromarray(bits).save(buffer, format="PNG")  # a 1-bit PNG: expanded exactly to 0 / 255
    rgb = conversions.compressed_to_rgb(CompressedImage(format="png", data=buffer.getvalue()))
    np.testing.assert_array_equal(rgb, np.repeat((bits * 255).astype(np.uint8)[..., None], 3, axis=2))
    grey = np.full((16, 16), 77, np.uint8)
    ok, jpeg = cv2.imencode(".jpg", grey)
    rgb = conversions.compressed_to_rgb(CompressedImage(format="jpeg", data=jpeg.tobytes()))
    assert rgb.shape == (16, 16, 3) and np.abs(rgb.astype(int) - 77).max() <= 2


@pytest.mark.parametrize("msg, message_part", [
    (Image(height=4, width=4, encoding="rgb8", step=12, data=bytes(47)), "data has 47 bytes"),
    (Image(height=4, width=4, encoding="rgb8", step=4, data=bytes(16)), "step 4 is smaller than a row"),
    (Image(height=0, width=4, encoding="rgb8", step=12, data=b""), "width and height must be positive"),
    (Image(height=2000, width=2000, encoding="rgb8", step=6000, data=b""), "more than max_image_pixels=1000000"),
    (CompressedImage(format="jpeg", data=b""), "compressed image has no data"),
    (CompressedImage(format="jpeg", data=b"GIF89a not a jpeg"), "could not be decoded as JPEG or PNG"),
    (CompressedImage(format="16UC1; compressedDepth png", data=b"x"), "is a depth format"),
    (_png(np.zeros((1001, 1000), np.uint8)), "1000x1001 = 1001000 pixels, more than max_image_pixels=1000000"),
])
def test_arrival_checks_read_only_the_header(msg, message_part):
    with pytest.raises(ConversionError) as error:
        conversions.check_image_message(msg, max_pixels=1_000_000)
    assert message_part in str(error.value)


def test_a_corrupt_png_body_is_refused_after_a_valid_header():
    msg = _png(RGB[..., ::-1])
    data = bytearray(msg.data)
    data[-40:-14] = bytes(26)  # damage the compressed pixel data (before the 12-byte IEND), keep the header
    msg.data = bytes(data)
    conversions.check_image_message(msg)  # the header is fine
    with pytest.raises(ConversionError, match="could not be decoded as JPEG or PNG: the PNG data is corrupt"):
        conversions.compressed_to_rgb(msg)


def test_rgb_to_image_msg_round_trip_keeps_header():
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 34
    msg = conversions.rgb_to_image_msg(RGB, header)
    assert (msg.encoding, msg.width, msg.height, msg.step) == ("rgb8", 7, 5, 21)
    assert msg.header.frame_id == "cam" and msg.header.stamp.nanosec == 34
    np.testing.assert_array_equal(conversions.image_to_rgb(msg), RGB)


# -- commands ------------------------------------------------------------------------------------


def command(**fields) -> SegmentationCommand:
    msg = SegmentationCommand()
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


def to_request(msg):
    return conversions.command_to_request(msg, VOCABULARY, STUFF, THRESHOLDS)


def test_auto_text_command_is_parsed_as_natural_language():
    request = to_request(command(text="grasp the red cup"))
    assert request.task is Task.REFERRING and request.text == "red cup"
    assert (request.score_threshold, request.mask_threshold, request.overlap_threshold) == (0.5, None, None)


def test_text_to_request_and_segment_everything_includes_stuff():
    assert conversions.text_to_request("grasp the red cup", VOCABULARY, STUFF, THRESHOLDS).text == "red cup"
    panoptic = conversions.text_to_request("segment everything", VOCABULARY, STUFF, THRESHOLDS)
    assert panoptic.task is Task.PANOPTIC
    assert panoptic.vocabulary == ("cup", "bowl", "table") and panoptic.stuff_vocabulary == ("table",)


@pytest.mark.parametrize("text, message_part", [
    ("", "empty"),
    ("   ", "empty"),
    ("x" * 10_000, "10000 characters; the limit is 1000"),
    ("grasp the", "names no object"),
])
def test_bad_text_commands(text, message_part):
    with pytest.raises(ConversionError, match=message_part):
        conversions.text_to_request(text, VOCABULARY, STUFF, THRESHOLDS)


def test_explicit_tasks_and_visual_prompts():
    points = [Point(x=10.0, y=20.0), Point(x=30.0, y=5.0)]
    request = to_request(command(task=SegmentationCommand.TASK_INTERACTIVE, points=points, point_labels=[1, 0]))
    assert request.task is Task.INTERACTIVE and len(request.regions) == 1
    np.testing.assert_array_equal(request.regions[0].points, [[10, 20], [30, 5]])
    np.testing.assert_array_equal(request.regions[0].point_labels, [1, 0])

    boxes = [RegionOfInterest(x_offset=1, y_offset=2, width=3, height=4), RegionOfInterest(x_offset=5, y_offset=5, width=2, height=2)]
    vgd = to_request(command(boxes=boxes))  # TASK_AUTO + several prompts -> VGD
    assert vgd.task is Task.VGD and vgd.regions[0].box == (1.0, 2.0, 4.0, 6.0)

    scribble = Polygon(points=[Point32(x=1.0, y=1.0), Point32(x=4.0, y=4.0)])
    assert to_request(command(scribbles=[scribble])).task is Task.INTERACTIVE

    mask = Image(height=2, width=3, encoding="mono8", step=3, data=bytes([0, 255, 0, 0, 1, 0]))
    mask_request = to_request(command(task=SegmentationCommand.TASK_INTERACTIVE, masks=[mask]))
    np.testing.assert_array_equal(mask_request.regions[0].mask, [[False, True, False], [False, True, False]])


def test_generic_tasks_default_vocabulary_and_thresholds():
    """A command's threshold (>= 0) overrides the node's; negative or NaN falls back to the node's,
    and an unset node parameter leaves it to the model (None)."""
    instance = to_request(command(task=SegmentationCommand.TASK_INSTANCE, score_threshold=0.25, mask_threshold=float("nan")))
    assert instance.vocabulary == VOCABULARY and instance.score_threshold == 0.25 and instance.mask_threshold is None
    overlap = to_request(command(task=SegmentationCommand.TASK_PANOPTIC, overlap_threshold=0.6, score_threshold=-1.0))
    assert (overlap.score_threshold, overlap.mask_threshold, overlap.overlap_threshold) == (0.5, None, 0.6)
    node = ThresholdOverrides.from_values(-1.0, 0.4, float("nan"))
    assert node == ThresholdOverrides(None, 0.4, None)
    assert conversions.command_to_request(command(text="cup"), VOCABULARY, STUFF, node).mask_threshold == 0.4
    panoptic = to_request(command(task=SegmentationCommand.TASK_PANOPTIC, vocabulary=["mug"]))
    assert panoptic.vocabulary == ("mug", "table") and panoptic.stuff_vocabulary == STUFF
    assert to_request(command(vocabulary=["mug", "can"])).task is Task.OPEN_VOCABULARY


@pytest.mark.parametrize("fields, message_part", [
    ({}, "the command is empty"),
    ({"task": 42, "text": "cup"}, "unknown task 42"),
    ({"text": "y" * 1001}, "1001 characters"),
    ({"task": SegmentationCommand.TASK_INTERACTIVE, "points": [Point()], "point_labels": [1, 1]}, "one label per point"),
    ({"task": SegmentationCommand.TASK_INTERACTIVE, "point_labels": [1]}, "point prompt needs at least one point"),
    ({"task": SegmentationCommand.TASK_INTERACTIVE, "points": [Point()], "point_labels": [0]}, "at least one positive"),
    ({"task": SegmentationCommand.TASK_INTERACTIVE, "points": [Point(x=float("nan"))]}, "finite"),
    ({"task": SegmentationCommand.TASK_INTERACTIVE}, "exactly one visual prompt, got 0"),
    ({"task": SegmentationCommand.TASK_INTERACTIVE, "points": [Point(x=1.0, y=1.0)],
      "boxes": [RegionOfInterest(x_offset=1, y_offset=1, width=3, height=3)]}, "exactly one visual prompt, got 2"),
    ({"text": "grasp the cup", "points": [Point()]}, "with text takes no visual prompts"),
    ({"task": SegmentationCommand.TASK_INSTANCE, "vocabulary": ["cup", "Cup"]}, "same class more than once"),
    ({"task": SegmentationCommand.TASK_INSTANCE, "stuff_vocabulary": ["table"]}, "panoptic requests only"),
    ({"task": SegmentationCommand.TASK_REFERRING, "text": "cup", "vocabulary": ["cup"]}, "takes no vocabulary"),
    ({"task": SegmentationCommand.TASK_VGD, "boxes": [RegionOfInterest(x_offset=1, y_offset=1, width=2, height=2)] * 65},
     "the limit is 64"),
    ({"text": "cup", "overlap_threshold": 3.0}, "overlap_threshold must be in"),
    ({"task": SegmentationCommand.TASK_REFERRING, "text": "cup", "points": [Point()]}, "takes no visual prompts"),
    ({"text": "cup", "score_threshold": 1.5}, r"score_threshold must be in \[0, 1\], got 1.5"),
    ({"text": "cup", "mask_threshold": 1.0}, r"mask_threshold must be in \(0, 1\), got 1.0"),
    ({"text": "cup", "mask_threshold": 0.0}, r"mask_threshold must be in \(0, 1\), got 0.0"),
    ({"vocabulary": ["cup", ""]}, "empty name"),
    ({"task": SegmentationCommand.TASK_INTERACTIVE,
      "masks": [Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(12))]}, "use mono8"),
    ({"task": SegmentationCommand.TASK_VGD,
      "boxes": [RegionOfInterest(x_offset=1, y_offset=1, width=0, height=3)]}, "x0 < x1 and y0 < y1"),
    ({"task": SegmentationCommand.TASK_INTERACTIVE,
      "masks": [Image(height=2, width=2, encoding="mono8", step=2, data=bytes(4))]}, "mask prompt 0: .*empty"),
])
def test_bad_commands_raise_clear_errors(fields, message_part):
    with pytest.raises(ConversionError, match=message_part):
        to_request(command(**fields))


def test_clicks():
    request = conversions.click_to_request(12.4, 7.6, THRESHOLDS)
    assert request.task is Task.INTERACTIVE
    np.testing.assert_allclose(request.regions[0].points, [[12.4, 7.6]], rtol=1e-6)
    assert request.describe() == "click (12, 8)" and request.score_threshold == 0.5
    with pytest.raises(ConversionError, match="finite"):
        conversions.click_to_request(float("inf"), 1.0, THRESHOLDS)


# -- results -------------------------------------------------------------------------------------


def _instance(mask, label, score, class_index, instance_id=0):
    rows, cols = np.nonzero(mask)
    box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
    return Instance(mask=mask, label=label, score=score, box_xyxy=box, phrase=label, class_index=class_index,
                    instance_id=instance_id)


def test_result_to_msg_crops_masks_and_copies_the_header():
    height, width = 12, 16
    first = np.zeros((height, width), bool)
    first[2:6, 3:9] = True
    first[3, 4] = False  # a hole survives the crop
    second = np.zeros((height, width), bool)
    second[4:10, 7:12] = True  # overlaps `first`
    instances = [_instance(first, "cup", 0.9, 0, 1), _instance(second, "bowl", 0.6, 1, 2)]
    result = SegmentationResult(task=Task.INSTANCE, instances=instances, labels=("cup", "bowl"), image_size=(height, width))
    header = Header(frame_id="camera_optical")
    header.stamp.sec, header.stamp.nanosec = 1700000000, 5
    geometry = ObjectGeometry(np.array([0.1, -0.2, 0.9]), np.array([0.05, 0.06, 0.07]), 20, 23, 22)
    msg = conversions.result_to_msg(result, header, instances, [1, 2], [geometry, None], "r1", "ins: cup, bowl",
                                    False, True, {"llm": 0.012})
    assert msg.success and msg.error == "" and msg.request_id == "r1" and msg.task == SegmentationCommand.TASK_INSTANCE
    assert msg.header.frame_id == "camera_optical" and msg.header.stamp.sec == 1700000000 and msg.header.stamp.nanosec == 5
    assert (msg.image_width, msg.image_height) == (width, height) and list(msg.vocabulary) == ["cup", "bowl"]
    cup = msg.instances[0]
    assert (cup.roi.x_offset, cup.roi.y_offset, cup.roi.width, cup.roi.height) == (3, 2, 6, 4)
    assert cup.mask.encoding == "mono8" and (cup.mask.width, cup.mask.height, cup.mask.step) == (6, 4, 6)
    crop = np.frombuffer(bytes(cup.mask.data), np.uint8).reshape(4, 6)
    np.testing.assert_array_equal(crop > 0, first[2:6, 3:9])
    assert set(np.unique(crop)) == {0, 255} and cup.area == first.sum()
    assert cup.mask.header.frame_id == "camera_optical"
    assert cup.has_3d and cup.depth_pixels == 20 and (cup.centroid.x, cup.centroid.z) == (0.1, 0.9)
    assert not msg.instances[1].has_3d
    assert msg.label_image_type == InstanceMaskArray.LABEL_IMAGE_INSTANCE
    assert msg.label_image.encoding == "16UC1" and msg.label_image.is_bigendian == int(sys.byteorder == "big")
    labels = np.frombuffer(bytes(msg.label_image.data), np.uint16).reshape(height, width)
    assert labels[2, 3] == 1 and labels[9, 11] == 2 and labels[0, 0] == 0
    assert labels[5, 8] == 1  # overlap: the higher-scoring instance wins
    assert [(t.stage, round(t.milliseconds, 3)) for t in msg.timings] == [("llm", 12.0)]


def test_semantic_label_image():
    semantic = np.array([[-1, 0], [1, 1]], dtype=np.int32)
    result = SegmentationResult(task=Task.SEMANTIC, instances=[], labels=("a", "b"), image_size=(2, 2),
                                semantic_map=semantic)
    kind, labels = conversions.label_image(result, [])
    assert kind == InstanceMaskArray.LABEL_IMAGE_SEMANTIC
    np.testing.assert_array_equal(labels, [[0, 1], [2, 2]])


def test_error_result():
    header = Header(frame_id="f")
    msg = conversions.error_result(header, "image rejected: bad", request_id="7", prompt="p" * 5000, task=Task.REFERRING)
    assert not msg.success and msg.error == "image rejected: bad" and msg.request_id == "7"
    assert len(msg.prompt) == 1000 and msg.task == SegmentationCommand.TASK_REFERRING and not msg.instances
