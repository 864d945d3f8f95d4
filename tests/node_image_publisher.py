"""Helper process for test_node_transport.py: a camera-like publisher of 640x480 rgb8 tabletop frames.

    python tests/node_image_publisher.py --namespace /ns --reliability best_effort [--rate 10]
        [--first-sec 11000] [--duration 60] [--width 640 --height 480]

Publishes ``<namespace>/image`` with KEEP_LAST 1 and the given reliability, stamped
``first_sec + i`` seconds, until SIGINT / SIGTERM or ``duration`` seconds, then prints
``published <n>`` and exits 0. Whether best-effort frames arrive depends on the Fast DDS
transport profile in this process's environment (FASTDDS_DEFAULT_PROFILES_FILE).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

import rclpy
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from xsam_engine.tabletop.scenes import generate_scene


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--reliability", choices=("reliable", "best_effort"), required=True)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--first-sec", type=int, default=11000)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    args = parser.parse_args()

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    image = generate_scene(13, args.width, args.height).image
    data = image.tobytes()
    rclpy.init(signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    node = rclpy.create_node("camera_publisher", namespace=args.namespace)
    reliability = ReliabilityPolicy.RELIABLE if args.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    publisher = node.create_publisher(Image, "image", QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                                                 reliability=reliability))
    print(f"publishing {args.width}x{args.height} rgb8 {args.reliability}", flush=True)
    count = 0
    started = time.monotonic()
    try:
        while not stop and time.monotonic() - started < args.duration:
            message = Image(height=args.height, width=args.width, encoding="rgb8", step=args.width * 3, data=data)
            message.header.frame_id = "camera_color_optical_frame"
            message.header.stamp.sec = args.first_sec + count
            publisher.publish(message)
            count += 1
            print(f"published {count}", flush=True)
            time.sleep(max(0.0, started + count / args.rate - time.monotonic()))
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
