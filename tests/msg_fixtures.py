"""Reference xsam_ros messages for the round-trip test, and helpers to compare messages.

Imported by tests/test_messages_roundtrip.py and by the two helper processes
(tests/msg_roundtrip_publisher.py, tests/msg_roundtrip_receiver.py), so all three build
exactly the same messages. Every field of every xsam_ros message (and of every message
nested in it) gets a distinctive non-default value; ``default_valued_fields`` finds the
ones that do not, so a field added to a .msg file later without a value here fails the
test. Floating-point values are exactly representable in float32, so the comparison after
the trip through DDS can be exact.
"""

import hashlib

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Point32, Polygon, Vector3
from sensor_msgs.msg import Image, RegionOfInterest
from std_msgs.msg import Header
from xsam_ros.msg import InstanceMask, InstanceMaskArray, SegmentationCommand, StageTiming

# name -> (message type, topic relative to the test namespace)
TOPICS = {
    'instance_mask_array': (InstanceMaskArray, 'instances'),
    'instance_mask': (InstanceMask, 'instance'),
    'segmentation_command': (SegmentationCommand, 'command'),
}

IMAGE_WIDTH = 1280
IMAGE_HEIGHT = 720
# The big instance: a 640x480 mono8 crop at (320, 120) of the 1280x720 source image.
BIG_ROI = (320, 120, 640, 480)      # x_offset, y_offset, width, height
SMALL_ROI = (10, 12, 50, 30)


def header(frame_id='camera_color_optical_frame'):
    return Header(stamp=Time(sec=1_700_000_123, nanosec=456_789_012), frame_id=frame_id)


def big_mask_array():
    """640x480 uint8 mask (0 / 255): an off-centre ellipse with a rectangular hole."""
    height, width = BIG_ROI[3], BIG_ROI[2]
    yy, xx = np.mgrid[0:height, 0:width]
    inside = ((xx - 300) / 290.0) ** 2 + ((yy - 250) / 220.0) ** 2 <= 1.0
    inside[100:160, 200:330] = False
    return np.where(inside, 255, 0).astype(np.uint8)


def small_mask_array():
    height, width = SMALL_ROI[3], SMALL_ROI[2]
    mask = np.full((height, width), 255, dtype=np.uint8)
    mask[:5, :7] = 0
    return mask


def label_image_array():
    """1280x720 uint16 label image: pixel = index into instances + 1, 0 = none."""
    labels = np.zeros((IMAGE_HEIGHT, IMAGE_WIDTH), dtype=np.uint16)
    x, y, w, h = BIG_ROI
    labels[y:y + h, x:x + w][big_mask_array() > 0] = 1
    x, y, w, h = SMALL_ROI
    labels[y:y + h, x:x + w][small_mask_array() > 0] = 2
    return labels


def mono8_image(array, frame_id='camera_color_optical_frame'):
    height, width = array.shape
    # is_bigendian is meaningless for 8-bit data; set to 1 so that the field is exercised.
    return Image(header=header(frame_id), height=height, width=width, encoding='mono8',
                 is_bigendian=1, step=width, data=array.tobytes())


def label_image():
    labels = label_image_array()
    return Image(header=header(), height=IMAGE_HEIGHT, width=IMAGE_WIDTH, encoding='16UC1',
                 is_bigendian=1, step=IMAGE_WIDTH * 2, data=labels.astype('>u2').tobytes())


def roi(x, y, w, h):
    return RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h, do_rectify=True)


def instance_mask_big():
    mask = big_mask_array()
    return InstanceMask(
        id=7,
        label='red cup',
        class_id=2,
        score=0.875,
        phrase='the red cup left of the bowl (ünïcødé ✓)',
        roi=roi(*BIG_ROI),
        mask=mono8_image(mask),
        area=int(np.count_nonzero(mask)),
        has_3d=True,
        centroid=Point(x=0.125, y=-0.25, z=0.875),
        extent=Vector3(x=0.0625, y=0.09375, z=-0.03125),
        depth_pixels=123_456,
    )


def instance_mask_small():
    mask = small_mask_array()
    return InstanceMask(
        id=4_000_000_001,
        label='bowl',
        class_id=-3,
        score=0.5,
        phrase='bowl',
        roi=roi(*SMALL_ROI),
        mask=mono8_image(mask),
        area=int(np.count_nonzero(mask)),
        has_3d=True,
        centroid=Point(x=-1.5, y=2.25, z=3.0),
        extent=Vector3(x=0.5, y=0.25, z=0.125),
        depth_pixels=1_234,
    )


def instance_mask_array():
    return InstanceMaskArray(
        header=header(),
        request_id='req-42',
        task=SegmentationCommand.TASK_INSTANCE,
        prompt='segment every cup and bowl',
        response_text='Sure, [SEG] the red cup and [SEG] the bowl.',
        success=True,
        error='depth image arrived 40 ms late',
        message='phrases without a mask: \'a plate\' best score 0.18 < 0.50',
        score_threshold=0.375,
        mask_threshold=0.625,
        overlap_threshold=0.875,
        image_width=IMAGE_WIDTH,
        image_height=IMAGE_HEIGHT,
        tracking=True,
        instances=[instance_mask_big(), instance_mask_small()],
        vocabulary=['cup', 'bowl', 'red cup'],
        label_image_type=InstanceMaskArray.LABEL_IMAGE_INSTANCE,
        label_image=label_image(),
        timings=[
            StageTiming(stage='preprocess', milliseconds=1.5),
            StageTiming(stage='llm', milliseconds=250.25),
            StageTiming(stage='ros_conversion', milliseconds=0.75),
        ],
    )


def segmentation_command():
    prompt_mask = np.zeros((48, 64), dtype=np.uint8)
    prompt_mask[10:30, 20:50] = 255
    return SegmentationCommand(
        header=header('camera_link'),
        request_id='req-42',
        task=SegmentationCommand.TASK_INTERACTIVE,
        text='grasp the red cup',
        points=[Point(x=100.5, y=200.25, z=1.0), Point(x=640.0, y=360.0, z=-1.0)],
        point_labels=[1, 0],
        boxes=[roi(300, 100, 680, 520), roi(5, 6, 70, 40)],
        scribbles=[Polygon(points=[Point32(x=10.5, y=20.5, z=0.5),
                                   Point32(x=30.25, y=40.75, z=-0.5),
                                   Point32(x=50.0, y=45.5, z=2.0)])],
        masks=[mono8_image(prompt_mask)],
        vocabulary=['cup', 'bowl'],
        stuff_vocabulary=['table', 'wall'],
        continuous=True,
        score_threshold=0.375,
        mask_threshold=0.625,
        overlap_threshold=0.875,
    )


BUILDERS = {
    'instance_mask_array': instance_mask_array,
    'instance_mask': instance_mask_big,
    'segmentation_command': segmentation_command,
}


# ---------------------------------------------------------------------------------------
def is_message(value):
    return hasattr(type(value), 'get_fields_and_field_types')


def _leaf(value):
    """A comparable, JSON-friendly form of a primitive field or primitive sequence."""
    if isinstance(value, (bytes, bytearray, memoryview)) or hasattr(value, 'tobytes'):
        data = value.tobytes() if hasattr(value, 'tobytes') else bytes(value)
        return {'bytes': len(data), 'sha256': hashlib.sha256(data).hexdigest()}
    if isinstance(value, (list, tuple)):
        return [_leaf(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def msg_to_dict(msg):
    """Nested dict of a message; byte / numeric arrays become {'bytes', 'sha256'}."""
    out = {}
    for field in msg.get_fields_and_field_types():
        value = getattr(msg, field)
        if is_message(value):
            out[field] = msg_to_dict(value)
        elif isinstance(value, (list, tuple)) and value and is_message(value[0]):
            out[field] = [msg_to_dict(v) for v in value]
        else:
            out[field] = _leaf(value)
    return out


def flatten(tree, prefix=''):
    """{'a': {'b': [1, {'c': 2}]}} -> {'a.b[0]': 1, 'a.b[1].c': 2}, plus list lengths."""
    flat = {}
    if isinstance(tree, dict) and not ('bytes' in tree and 'sha256' in tree):
        for key, value in tree.items():
            flat.update(flatten(value, f'{prefix}.{key}' if prefix else key))
    elif isinstance(tree, list) and tree and isinstance(tree[0], dict):
        flat[f'{prefix}.__len__'] = len(tree)
        for i, value in enumerate(tree):
            flat.update(flatten(value, f'{prefix}[{i}]'))
    else:
        flat[prefix] = tree
    return flat


def field_differences(expected, received):
    """List of 'path: expected != received' for every differing leaf field."""
    exp = flatten(msg_to_dict(expected))
    got = flatten(msg_to_dict(received))
    diffs = []
    for path in sorted(set(exp) | set(got)):
        if exp.get(path, '<missing>') != got.get(path, '<missing>'):
            diffs.append(f'{path}: expected {exp.get(path, "<missing>")!r}, '
                         f'received {got.get(path, "<missing>")!r}')
    return diffs


def default_valued_fields(msg, prefix=''):
    """Paths of fields (recursively) that still hold their type's default value."""
    default = type(msg)()
    found = []
    for field in msg.get_fields_and_field_types():
        path = f'{prefix}.{field}' if prefix else field
        value = getattr(msg, field)
        if is_message(value):
            found += default_valued_fields(value, path)
            continue
        if isinstance(value, (list, tuple)) and value and is_message(value[0]):
            for i, item in enumerate(value):
                found += default_valued_fields(item, f'{path}[{i}]')
            continue
        if _leaf(value) == _leaf(getattr(default, field)):
            found.append(path)
    return found


def image_pixels(image):
    """numpy view of a mono8 / 16UC1 sensor_msgs/Image (honours is_bigendian)."""
    if image.encoding == 'mono8':
        dtype = np.uint8
    elif image.encoding == '16UC1':
        dtype = np.dtype('>u2' if image.is_bigendian else '<u2')
    else:
        raise ValueError(f'unsupported encoding {image.encoding!r}')
    data = np.frombuffer(bytes(image.data), dtype=dtype)
    row = image.step // np.dtype(dtype).itemsize
    return data.reshape(image.height, row)[:, :image.width]


def roundtrip_qos():
    """QoS of both round-trip processes: reliable, transient-local, keep-last 5 (late joiners still get it)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def roundtrip_arguments(description, *extra):
    """(args, deadline) of a round-trip process: --namespace, --timeout and `extra` ((flags, kwargs) pairs)."""
    import argparse
    import time

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('--namespace', required=True)
    for flags, options in extra:
        parser.add_argument(*flags, **options)
    parser.add_argument('--timeout', type=float, default=30.0)
    args = parser.parse_args()
    return args, time.monotonic() + args.timeout

