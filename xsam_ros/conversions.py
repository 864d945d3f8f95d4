"""Conversions between ROS messages and the engine's numpy / dataclass world, without cv_bridge.

Images:
    ``image_to_rgb`` (sensor_msgs/Image rgb8, bgr8, rgba8, bgra8, mono8 -> (H, W, 3) uint8 RGB),
    ``compressed_to_rgb`` (sensor_msgs/CompressedImage JPEG / PNG, decoded with OpenCV as stored
    and accepted by the same rule as raw images: 8 bits per channel, grey / colour / colour +
    alpha; 16-bit or float data is refused on both paths), ``check_image_message`` (the cheap
    checks the node runs on arrival),
    ``depth_to_metres`` (16UC1 / mono16 millimetres or 32FC1 metres -> (H, W) float32 metres,
    NaN where invalid), ``rgb_to_image_msg``. Row padding (``step`` larger than a row) and
    ``is_bigendian`` (16- and 32-bit data) are honoured; sizes are checked before anything is
    allocated, and every problem raises ``ConversionError`` with a message that says what was
    wrong.

Commands:
    ``command_to_request`` (xsam_ros/SegmentationCommand), ``text_to_request`` (natural
    language via ``xsam_engine.commands.parse_command``) and ``click_to_request`` (a pixel
    click -> interactive point prompt) build ``SegmentationRequest``s; invalid commands raise
    ``ConversionError``.

Results:
    ``instance_to_msg``, ``result_to_msg`` and ``error_result`` build xsam_ros/InstanceMask(Array).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header
from xsam_ros.msg import InstanceMask, InstanceMaskArray, SegmentationCommand, StageTiming

from xsam_engine.commands import parse_command
from xsam_engine.requests import MAX_TEXT_LENGTH, RequestError, SegmentationRequest, Task, VisualPrompt

from .geometry import ObjectGeometry, image_camera_matrix



class ConversionError(ValueError):
    """A message cannot be converted; the text says why and, where possible, how to fix it."""


# -- images ------------------------------------------------------------------------------------

# The one acceptance rule for colour images, raw and compressed alike: 8 bits per channel, grey,
# colour or colour + alpha. encoding -> (channels, channel order of the data). Alpha is ignored
# (the model sees RGB) and grey is replicated to three channels; both are exact. Anything else
# (16-bit, float, YUV, Bayer) is refused with the same message on both paths: reducing it to
# 8 bits would throw information away in a way only the camera driver can choose well.
COLOUR_ENCODINGS: dict[str, tuple[int, str]] = {
    "rgb8": (3, "RGB"),
    "bgr8": (3, "BGR"),
    "rgba8": (4, "RGBA"),
    "bgra8": (4, "BGRA"),
    "mono8": (1, "MONO"),
    "8UC1": (1, "MONO"),
}
# What OpenCV's decoder (IMREAD_UNCHANGED) returns for a JPEG / PNG, as the raw encoding with the
# same layout: (dtype, channels) -> encoding. 1-, 2- and 4-bit grey PNGs arrive expanded to
# 0..255 (exact), palette PNGs as their colours, grey + alpha PNGs as BGRA.
DECODED_ENCODINGS: dict[tuple[str, int], str] = {
    ("uint8", 1): "mono8", ("uint8", 3): "bgr8", ("uint8", 4): "bgra8",
    ("uint16", 1): "mono16", ("uint16", 3): "bgr16", ("uint16", 4): "bgra16",
    ("float32", 1): "32FC1", ("float32", 3): "32FC3", ("float32", 4): "32FC4",
}
COMPRESSED_FORMATS = ("JPEG", "PNG")
# encoding -> (numpy dtype without byte order, factor to metres)
DEPTH_ENCODINGS: dict[str, tuple[str, float]] = {
    "16UC1": ("u2", 0.001),
    "mono16": ("u2", 0.001),
    "32FC1": ("f4", 1.0),
}


def unsupported_encoding(encoding: str, where: str = "") -> ConversionError:
    """The one refusal for colour images that the acceptance rule does not cover (raw or compressed)."""
    return ConversionError(
        f"unsupported image encoding {encoding!r}{where}; the node takes 8-bit images: "
        f"{', '.join(COLOUR_ENCODINGS)} (alpha is ignored, grey is replicated to RGB), raw or as JPEG / PNG on "
        "<image>/compressed; convert other formats (16-bit, float, YUV, Bayer) to 8 bits in the camera driver")


def _check_size(height: int, width: int, max_pixels: int | None) -> None:
    if height <= 0 or width <= 0:
        raise ConversionError(f"image is {width}x{height}; width and height must be positive")
    if max_pixels is not None and height * width > max_pixels:
        raise ConversionError(
            f"image is {width}x{height} = {width * height} pixels, more than max_image_pixels={max_pixels}")


def _check_layout(msg: Image, channels: int, itemsize: int, max_pixels: int | None) -> tuple[int, int, int, int]:
    """(height, width, step, row bytes) after checking size, step and data length; reads no pixel."""
    height, width = int(msg.height), int(msg.width)
    _check_size(height, width, max_pixels)
    row_bytes = width * channels * itemsize
    step = int(msg.step)
    if step < row_bytes:
        raise ConversionError(
            f"{msg.encoding} image {width}x{height}: step {step} is smaller than a row "
            f"({width} px x {channels * itemsize} bytes = {row_bytes})")
    size = len(msg.data)
    # A publisher may leave out the padding after the last row; anything else must match exactly.
    if size not in (step * height, step * (height - 1) + row_bytes):
        raise ConversionError(
            f"{msg.encoding} image {width}x{height} with step {step}: data has {size} bytes, "
            f"expected step x height = {step * height}")
    return height, width, step, row_bytes


def _pixel_array(msg: Image, channels: int, dtype: np.dtype, max_pixels: int | None) -> np.ndarray:
    """(H, W, channels) view of msg.data honouring step (row padding) and byte order."""
    height, width, step, row_bytes = _check_layout(msg, channels, dtype.itemsize, max_pixels)
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    if len(buffer) != step * height:  # pad the missing last-row padding so that every row has `step` bytes
        buffer = np.concatenate([buffer, np.zeros(step * height - len(buffer), dtype=np.uint8)])
    rows = buffer.reshape(height, step)[:, :row_bytes]
    return np.ascontiguousarray(rows).view(dtype).reshape(height, width, channels)


def _compressed_header(msg: CompressedImage, max_pixels: int | None) -> tuple[str, int, int]:
    """(format "JPEG" / "PNG", width, height) from the compressed data's header; decodes no pixel."""
    import io
    import warnings

    from PIL import Image as PilImage

    if "compresseddepth" in msg.format.lower():
        raise ConversionError(f"compressed image format {msg.format!r} is a depth format, not a colour image")
    if len(msg.data) == 0:
        raise ConversionError("compressed image has no data")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PilImage.DecompressionBombWarning)  # our own limit is max_pixels
            with PilImage.open(io.BytesIO(bytes(msg.data)), formats=COMPRESSED_FORMATS) as header:
                kind, (width, height) = header.format, header.size
    except PilImage.DecompressionBombError as error:
        raise ConversionError(f"compressed image is too large to decode ({error})") from error
    except Exception as error:  # PIL raises UnidentifiedImageError, SyntaxError, OSError on bad headers
        raise ConversionError(
            f"compressed image ({len(msg.data)} bytes, format {msg.format!r}) could not be decoded as JPEG or PNG: "
            f"its header is not a JPEG or PNG header ({type(error).__name__})") from error
    _check_size(height, width, max_pixels)
    return kind, width, height


def check_image_message(msg: Image | CompressedImage, max_pixels: int | None = None) -> None:
    """The cheap checks of an image message, without reading or decoding a pixel (run on arrival).

    Image: the encoding is accepted (``COLOUR_ENCODINGS``), width and height are positive and
    within ``max_pixels``, step covers a row and the data length is step x height.
    CompressedImage: data is present, the format is not a depth format, the data starts with a
    JPEG or PNG header whose size is within ``max_pixels``. Raises ConversionError.
    """
    if isinstance(msg, CompressedImage):
        _compressed_header(msg, max_pixels)
        return
    if msg.encoding not in COLOUR_ENCODINGS:
        raise unsupported_encoding(msg.encoding)
    channels, _ = COLOUR_ENCODINGS[msg.encoding]
    _check_layout(msg, channels, 1, max_pixels)


def _to_rgb(pixels: np.ndarray, order: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB copy of (H, W, C) uint8 pixels in channel ``order``."""
    if order == "RGB":
        return pixels.copy()  # never alias the message buffer (rclpy's array is writable)
    if order == "BGR":
        return np.ascontiguousarray(pixels[..., ::-1])
    if order == "RGBA":
        return np.ascontiguousarray(pixels[..., :3])
    if order == "BGRA":
        return np.ascontiguousarray(pixels[..., 2::-1])
    return np.ascontiguousarray(np.repeat(pixels, 3, axis=2))


def image_to_rgb(msg: Image, max_pixels: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB copy of a colour or mono image message (``COLOUR_ENCODINGS``)."""
    if msg.encoding not in COLOUR_ENCODINGS:
        raise unsupported_encoding(msg.encoding)
    channels, order = COLOUR_ENCODINGS[msg.encoding]
    return _to_rgb(_pixel_array(msg, channels, np.dtype(np.uint8), max_pixels), order)


def compressed_to_rgb(msg: CompressedImage, max_pixels: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a JPEG / PNG CompressedImage, by the same rule as raw images.

    Decoded with OpenCV as stored (``IMREAD_UNCHANGED``: bit depth and channels kept, EXIF
    orientation not applied, so the pixel grid is the camera's, as depth and camera_info
    expect). The decoded layout is named as the raw encoding it equals (``DECODED_ENCODINGS``:
    an 8-bit colour PNG / JPEG is bgr8, with alpha bgra8, grey mono8, a 16-bit PNG bgr16 /
    mono16) and accepted or refused exactly as that raw encoding would be.
    """
    import cv2

    kind, width, height = _compressed_header(msg, max_pixels)
    decoded = cv2.imdecode(np.frombuffer(msg.data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ConversionError(
            f"compressed image ({len(msg.data)} bytes, format {msg.format!r}) could not be decoded as JPEG or PNG: "
            f"the {kind} data is corrupt")
    pixels = decoded if decoded.ndim == 3 else decoded[..., None]
    encoding = DECODED_ENCODINGS.get((pixels.dtype.name, pixels.shape[2]), f"{pixels.dtype.name} x{pixels.shape[2]}")
    if encoding not in COLOUR_ENCODINGS:
        bits = 8 * pixels.dtype.itemsize
        raise unsupported_encoding(encoding, f" (a {bits}-bit {kind} with {pixels.shape[2]} channel(s))")
    if pixels.shape[:2] != (height, width):
        raise ConversionError(f"compressed {kind} decoded to {pixels.shape[1]}x{pixels.shape[0]} but its header says "
                              f"{width}x{height}")
    return _to_rgb(pixels, COLOUR_ENCODINGS[encoding][1])


def depth_to_metres(msg: Image, max_pixels: int | None = None) -> np.ndarray:
    """(H, W) float32 metres; 0, NaN and inf become NaN. 16UC1 is millimetres, 32FC1 metres (REP-118)."""
    encoding = msg.encoding
    if encoding not in DEPTH_ENCODINGS:
        raise ConversionError(
            f"unsupported depth encoding {encoding!r}; use 16UC1 (millimetres) or 32FC1 (metres)")
    kind, scale = DEPTH_ENCODINGS[encoding]
    dtype = np.dtype((">" if msg.is_bigendian else "<") + kind)
    raw = _pixel_array(msg, 1, dtype, max_pixels)[..., 0]
    depth = raw.astype(np.float32)
    if scale != 1.0:
        depth *= np.float32(scale)
    depth[~np.isfinite(depth) | (depth <= 0)] = np.nan
    return depth


def rgb_to_image_msg(rgb: np.ndarray, header: Header) -> Image:
    """sensor_msgs/Image rgb8 of an (H, W, 3) uint8 array, with the given header."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width = rgb.shape[:2]
    return Image(header=header, height=height, width=width, encoding="rgb8", is_bigendian=0,
                 step=width * 3, data=rgb.tobytes())


def mono8_msg(array: np.ndarray, header: Header) -> Image:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    height, width = array.shape
    return Image(header=header, height=height, width=width, encoding="mono8", is_bigendian=0,
                 step=width, data=array.tobytes())


def mono16_label_msg(labels: np.ndarray, header: Header) -> Image:
    """16UC1 image in the machine's byte order (is_bigendian says which)."""
    labels = np.ascontiguousarray(labels, dtype=np.uint16)
    height, width = labels.shape
    return Image(header=header, height=height, width=width, encoding="16UC1",
                 is_bigendian=int(sys.byteorder == "big"), step=width * 2, data=labels.tobytes())


def camera_matrix(info, image_size: tuple[int, int]) -> np.ndarray:
    """(3, 3) K of the (width, height) = ``image_size`` images a sensor_msgs/CameraInfo describes.

    Applies the CameraInfo's ``roi`` and ``binning_x`` / ``binning_y`` as REP-104 and ROS
    image_geometry do (``geometry.image_camera_matrix``); raises GeometryError when the images
    do not have the size the camera_info implies, or when K is unusable.
    """
    roi = info.roi
    return image_camera_matrix(
        info.k, (int(info.width), int(info.height)), image_size, (int(info.binning_x), int(info.binning_y)),
        (int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)))


def copy_header(header: Header) -> Header:
    result = Header(frame_id=header.frame_id)
    result.stamp.sec, result.stamp.nanosec = header.stamp.sec, header.stamp.nanosec
    return result


def stamp_ns(header: Header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


# -- commands ----------------------------------------------------------------------------------

TASK_BY_CODE: dict[int, Task] = {
    SegmentationCommand.TASK_REFERRING: Task.REFERRING,
    SegmentationCommand.TASK_REASONING: Task.REASONING,
    SegmentationCommand.TASK_SEMANTIC: Task.SEMANTIC,
    SegmentationCommand.TASK_INSTANCE: Task.INSTANCE,
    SegmentationCommand.TASK_PANOPTIC: Task.PANOPTIC,
    SegmentationCommand.TASK_OPEN_VOCABULARY: Task.OPEN_VOCABULARY,
    SegmentationCommand.TASK_INTERACTIVE: Task.INTERACTIVE,
    SegmentationCommand.TASK_VGD: Task.VGD,
    SegmentationCommand.TASK_GCG: Task.GCG,
}
CODE_BY_TASK: dict[Task, int] = {task: code for code, task in TASK_BY_CODE.items()}


@dataclass(frozen=True)
class ThresholdOverrides:
    """Thresholds that override the model's defaults (the node's parameters); None = the model's default."""

    score: float | None = None
    mask: float | None = None
    overlap: float | None = None

    @staticmethod
    def from_values(score: float, mask: float, overlap: float) -> ThresholdOverrides:
        """From parameter or message values: negative or NaN = not set."""
        return ThresholdOverrides(_set_or_none(score), _set_or_none(mask), _set_or_none(overlap))

    def over(self, fallback: ThresholdOverrides) -> ThresholdOverrides:
        """These values where set, else `fallback`'s."""
        return ThresholdOverrides(
            *(mine if mine is not None else theirs for mine, theirs in (
                (self.score, fallback.score), (self.mask, fallback.mask), (self.overlap, fallback.overlap))))

    def as_request_fields(self) -> dict[str, float | None]:
        return {"score_threshold": self.score, "mask_threshold": self.mask, "overlap_threshold": self.overlap}


def _set_or_none(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) or value < 0 else value


def _request(**fields) -> SegmentationRequest:
    """SegmentationRequest(**fields); its own checks raise ConversionError here."""
    try:
        return SegmentationRequest(**fields)
    except RequestError as error:
        raise ConversionError(str(error)) from error


def text_to_request(
    text: str, default_vocabulary: Sequence[str], stuff_vocabulary: Sequence[str], thresholds: ThresholdOverrides
) -> SegmentationRequest:
    """A natural command ("grasp the red cup") -> request, via xsam_engine.commands.parse_command."""
    if len(text) > MAX_TEXT_LENGTH:
        raise ConversionError(f"command text has {len(text)} characters; the limit is {MAX_TEXT_LENGTH}")
    try:
        request = parse_command(text, default_vocabulary, stuff_vocabulary)
        return replace(request, **thresholds.as_request_fields())
    except ValueError as error:
        raise ConversionError(str(error)) from error


def click_to_request(x: float, y: float, thresholds: ThresholdOverrides) -> SegmentationRequest:
    """A click at pixel (x = column, y = row) -> interactive request with one positive point."""
    try:
        region = VisualPrompt.point(x, y)
    except RequestError as error:
        raise ConversionError(f"click ({x}, {y}): {error}") from error
    return _request(task=Task.INTERACTIVE, regions=(region,), **thresholds.as_request_fields())


def _regions(msg: SegmentationCommand) -> list[VisualPrompt]:
    """The command's visual prompts in message order: one POINT prompt for all points, then boxes,
    scribbles and masks (each checked by VisualPrompt)."""
    regions: list[VisualPrompt] = []
    try:
        if len(msg.points) or len(msg.point_labels):
            labels = list(msg.point_labels) or [1] * len(msg.points)
            regions.append(VisualPrompt.points_with_labels(
                np.array([[p.x, p.y] for p in msg.points], dtype=np.float64).reshape(-1, 2), np.array(labels)))
        for box in msg.boxes:
            regions.append(VisualPrompt.from_box(
                box.x_offset, box.y_offset, box.x_offset + box.width, box.y_offset + box.height))
        for polygon in msg.scribbles:
            regions.append(VisualPrompt.scribble(np.array([[p.x, p.y] for p in polygon.points], dtype=np.float64)))
    except RequestError as error:
        raise ConversionError(f"visual prompt {len(regions)}: {error}") from error
    for index, image in enumerate(msg.masks):
        if image.encoding not in ("mono8", "8UC1"):
            raise ConversionError(f"mask prompt {index} has encoding {image.encoding!r}; use mono8 (non-zero = inside)")
        try:
            regions.append(VisualPrompt.from_mask(_pixel_array(image, 1, np.dtype(np.uint8), None)[..., 0] > 0))
        except (ConversionError, RequestError) as error:
            raise ConversionError(f"mask prompt {index}: {error}") from error
    return regions


def command_to_request(
    msg: SegmentationCommand,
    default_vocabulary: Sequence[str],
    stuff_vocabulary: Sequence[str],
    thresholds: ThresholdOverrides,
) -> SegmentationRequest:
    """SegmentationCommand -> request (field rules in SegmentationCommand.msg); raises ConversionError.

    TASK_AUTO: non-empty ``text`` -> ``parse_command``; otherwise one visual prompt ->
    INTERACTIVE, several -> VGD; otherwise a vocabulary -> OPEN_VOCABULARY. Generic tasks
    without a vocabulary use the node's default_vocabulary (and, for PANOPTIC, its
    stuff_vocabulary). The command's thresholds (negative = not set) override ``thresholds``.
    Every check on the content is SegmentationRequest's own.
    """
    overrides = ThresholdOverrides.from_values(msg.score_threshold, msg.mask_threshold, msg.overlap_threshold)
    effective = overrides.over(thresholds)
    vocabulary, stuff = tuple(msg.vocabulary), tuple(msg.stuff_vocabulary)
    regions = _regions(msg)
    code = int(msg.task)
    if code == SegmentationCommand.TASK_AUTO:
        if msg.text.strip():
            if regions:
                raise ConversionError("a TASK_AUTO command with text takes no visual prompts; "
                                      "send the prompts with TASK_INTERACTIVE or TASK_VGD")
            return text_to_request(msg.text, vocabulary or default_vocabulary, stuff or stuff_vocabulary, effective)
        if regions:
            task = Task.INTERACTIVE if len(regions) == 1 else Task.VGD
        elif vocabulary:
            task = Task.OPEN_VOCABULARY
        else:
            raise ConversionError(
                "the command is empty: give a text ('grasp the red cup'), a visual prompt or a vocabulary")
    elif code in TASK_BY_CODE:
        task = TASK_BY_CODE[code]
    else:
        raise ConversionError(f"unknown task {code}; use one of the SegmentationCommand.TASK_* constants (0..9)")
    if task.is_generic and not vocabulary:
        vocabulary = tuple(default_vocabulary)
    if task is Task.PANOPTIC and not stuff:
        stuff = tuple(stuff_vocabulary)
    return _request(
        task=task, text=msg.text, vocabulary=vocabulary, stuff_vocabulary=stuff, regions=tuple(regions),
        **effective.as_request_fields())


# -- results -----------------------------------------------------------------------------------


def instance_to_msg(instance, instance_id: int, header: Header, geometry: ObjectGeometry | None) -> InstanceMask:
    """One engine Instance -> InstanceMask with a mono8 crop of its box."""
    x0, y0, x1, y1 = (int(v) for v in instance.box_xyxy)
    crop = instance.mask[y0:y1, x0:x1]
    message = InstanceMask(
        id=int(instance_id),
        label=instance.label,
        class_id=int(instance.class_index),
        score=float(instance.score),
        phrase=instance.phrase,
        roi=RegionOfInterest(x_offset=x0, y_offset=y0, width=max(0, x1 - x0), height=max(0, y1 - y0), do_rectify=False),
        mask=mono8_msg(np.where(crop, 255, 0).astype(np.uint8), copy_header(header)),
        area=int(crop.sum()),
    )
    if geometry is not None:
        message.has_3d = True
        message.centroid.x, message.centroid.y, message.centroid.z = (float(v) for v in geometry.centroid)
        message.extent.x, message.extent.y, message.extent.z = (float(v) for v in geometry.extent)
        message.depth_pixels = int(geometry.num_points)
    return message


def label_image(result, instances: Sequence) -> tuple[int, np.ndarray]:
    """(label_image_type, (H, W) uint16) for a result (see InstanceMaskArray.msg)."""
    height, width = result.image_size
    if result.semantic_map is not None and result.panoptic_map is None:
        labels = np.where(result.semantic_map >= 0, result.semantic_map + 1, 0)
        return InstanceMaskArray.LABEL_IMAGE_SEMANTIC, labels.astype(np.uint16)
    labels = np.zeros((height, width), dtype=np.uint16)
    # Lowest score first, so the best instance wins where masks overlap.
    for index in range(len(instances) - 1, -1, -1):
        labels[instances[index].mask] = index + 1
    kind = InstanceMaskArray.LABEL_IMAGE_PANOPTIC if result.panoptic_map is not None else InstanceMaskArray.LABEL_IMAGE_INSTANCE
    return kind, labels


def timings_msg(seconds: dict[str, float]) -> list[StageTiming]:
    return [StageTiming(stage=name, milliseconds=float(value * 1000.0)) for name, value in seconds.items()]


def result_to_msg(
    result,
    header: Header,
    instances: Sequence,
    instance_ids: Sequence[int],
    geometries: Sequence[ObjectGeometry | None],
    request_id: str,
    prompt: str,
    tracking: bool,
    publish_label_image: bool,
    timings: dict[str, float],
) -> InstanceMaskArray:
    """An engine SegmentationResult (instances already selected / id'd) -> InstanceMaskArray."""
    height, width = result.image_size
    message = InstanceMaskArray(
        header=copy_header(header),
        request_id=request_id,
        task=CODE_BY_TASK[result.task],
        prompt=prompt,
        response_text=result.text,
        success=True,
        image_width=width,
        image_height=height,
        tracking=tracking,
        instances=[instance_to_msg(inst, iid, header, geo) for inst, iid, geo in zip(instances, instance_ids, geometries)],
        vocabulary=list(result.labels),
        message=result.message,
    )
    if result.thresholds is not None:
        message.score_threshold = float(result.thresholds.score)
        message.mask_threshold = float(result.thresholds.mask)
        message.overlap_threshold = float(result.thresholds.overlap)
    if publish_label_image:
        kind, labels = label_image(result, instances)
        message.label_image_type = kind
        message.label_image = mono16_label_msg(labels, copy_header(header))
    message.timings = timings_msg(timings)
    return message


def error_result(header: Header, error: str, request_id: str = "", prompt: str = "", task: Task | None = None,
                 image_size: tuple[int, int] = (0, 0), timings: dict[str, float] | None = None) -> InstanceMaskArray:
    """success=false answer; ``error`` says why."""
    return InstanceMaskArray(
        header=copy_header(header),
        request_id=request_id,
        task=CODE_BY_TASK.get(task, 0) if task is not None else 0,
        prompt=prompt[:MAX_TEXT_LENGTH],
        success=False,
        error=error,
        image_width=int(image_size[1]),
        image_height=int(image_size[0]),
        timings=timings_msg(timings or {}),
    )
