"""End-to-end demo: a robot asks the perception node to "grasp the red cup" on a generated tabletop.

    python -m xsam_ros.demo            # what `make demo` runs
    python -m xsam_ros.demo --command "find all bowls" --seed 5 --output out/bowls.png

The default scene is not chosen for the model: it is the first held-out seed (from 900,000,000,
the evaluation's range) whose generated 640x480 scene holds exactly one red cup (seed 900000011:
white bowl, red cup, yellow bowl, orange bowl, black mug, green cup), a rule fixed in issue 14
before any model was measured on it (the shipped model gets this scene wrong: README "Demo").

What it does:
1. starts ``perception_node`` as its own process (default model unless --model-path), in a
   private namespace, with config/perception.yaml;
2. plays a camera: publishes a generated 640x480 tabletop scene (rgb8 image, 16UC1 depth in
   millimetres, camera_info) at 5 Hz with best-effort QoS, as many camera drivers do. This
   process loads the shipped Fast DDS profile (config/fastdds_large_images.xml), without which
   large best-effort images are lost (README, "Camera transport");
3. sends the command on ``command_text`` and waits for the InstanceMaskArray answer;
4. prints every instance (label, score, box, area, 3D centroid) next to the scene's ground
   truth, writes the overlay the node rendered to ``out/demo_overlay.png`` and shuts the node
   down (SIGINT). Exit code 0 on an answer with success=true, 1 otherwise (with the reason).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

PACKAGE = "xsam_ros"
DEMO_FIRST_SEED = 900_000_000  # the held-out range: training scenes come from far lower seeds
SOURCE_ROOT = Path(__file__).resolve().parents[1]


def share_file(*parts: str) -> Path:
    """A file of the package's share directory (installed) or of the source tree."""
    try:
        from ament_index_python.packages import get_package_share_directory

        candidate = Path(get_package_share_directory(PACKAGE), *parts)
        if candidate.is_file():
            return candidate
    except Exception:  # not installed with colcon / no ament_index_python
        pass
    return SOURCE_ROOT.joinpath(*parts)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--command", default="grasp the red cup", help="natural-language command to send")
    parser.add_argument("--seed", type=int, default=None,
                        help="tabletop scene seed (the scene as generated, nothing forced); default: the first "
                        f"held-out seed from {DEMO_FIRST_SEED:,} whose 640x480 scene holds exactly one red cup")
    parser.add_argument("--model-path", default="", help="model directory; empty = the built-in demo model")
    parser.add_argument("--output", default="out/demo_overlay.png", help="where to write the overlay PNG")
    parser.add_argument("--timeout", type=float, default=50.0, help="seconds to wait for the answer")
    parser.add_argument("--reliability", choices=("best_effort", "reliable"), default="best_effort",
                        help="QoS reliability of the demo camera's image and depth publishers")
    return parser.parse_args(argv)


def node_environment() -> dict:
    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 80))
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env["PYTHONUNBUFFERED"] = "1"
    env["RCUTILS_COLORIZED_OUTPUT"] = env.get("RCUTILS_COLORIZED_OUTPUT", "0")
    source = str(SOURCE_ROOT)
    if (SOURCE_ROOT / "xsam_ros" / "perception_node.py").is_file():
        env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH", "")) if p)
    return env


def start_node(namespace: str, model_path: str, env: dict) -> subprocess.Popen:
    command = [sys.executable, "-m", "xsam_ros.perception_node", "--ros-args", "-r", f"__ns:={namespace}",
               "--params-file", str(share_file("config", "perception.yaml"))]
    if model_path:
        command += ["-p", f"model_path:={model_path}"]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def echo(process: subprocess.Popen, lines: list[str]) -> None:
    for line in process.stdout:
        lines.append(line.rstrip())
        print(f"  [node] {line.rstrip()}", flush=True)


def stop_node(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.returncode


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    env = node_environment()
    # This process publishes large best-effort images: give it the shared-memory profile
    # (must be set before rclpy starts its DDS participant).
    profile = share_file("config", "fastdds_large_images.xml")
    if not os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE") and not os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE"):
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    os.environ["ROS_DOMAIN_ID"] = env["ROS_DOMAIN_ID"]
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = env["ROS_AUTOMATIC_DISCOVERY_RANGE"]
    namespace = f"/xsam_demo_{os.getpid()}"

    from xsam_engine.tabletop.scenes import generate_scene, seeds_with_one

    if args.seed is None:  # a rule fixed before the model was trained, not a scene chosen for it
        args.seed = seeds_with_one("cup", "red", 1, DEMO_FIRST_SEED)[0]
    scene = generate_scene(args.seed, 640, 480)
    print(f"Scene {args.seed}: {', '.join(o.name for o in scene.objects)}; ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, "
          f"namespace {namespace}", flush=True)
    node_process = start_node(namespace, args.model_path, env)
    node_lines: list[str] = []
    threading.Thread(target=echo, args=(node_process, node_lines), daemon=True).start()
    try:
        code = drive(args, scene, namespace, started, node_process)
    finally:
        node_code = stop_node(node_process)
        print(f"Node stopped (exit code {node_code}); demo took {time.monotonic() - started:.1f} s.", flush=True)
    return code


def drive(args, scene, namespace: str, started: float, node_process: subprocess.Popen) -> int:
    import cv2
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header, String
    from xsam_ros.msg import InstanceMaskArray

    from xsam_ros.conversions import image_to_rgb

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("xsam_demo_camera", namespace=namespace, context=context)
    reliability = ReliabilityPolicy.BEST_EFFORT if args.reliability == "best_effort" else ReliabilityPolicy.RELIABLE
    sensor_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=reliability)
    reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
    try:
        from rclpy.event_handler import PublisherEventCallbacks
    except ImportError:  # Humble
        from rclpy.qos_event import PublisherEventCallbacks
    # The node starts with a reliable subscription and switches to best-effort when it sees this
    # camera; skip rmw's "incompatible QoS" warning for that moment.
    quiet = PublisherEventCallbacks(incompatible_qos=lambda event: None)
    image_pub = node.create_publisher(Image, "image", sensor_qos, event_callbacks=quiet)
    depth_pub = node.create_publisher(Image, "depth", sensor_qos, event_callbacks=quiet)
    info_pub = node.create_publisher(CameraInfo, "camera_info", reliable)
    text_pub = node.create_publisher(String, "command_text", reliable)
    answers: list = []
    overlays: list = []
    condition = threading.Condition()

    def keep(store):
        def callback(msg):
            with condition:
                store.append(msg)
                condition.notify_all()
        return callback

    node.create_subscription(InstanceMaskArray, "instances", keep(answers), reliable)
    node.create_subscription(Image, "overlay", keep(overlays), reliable)

    image_data = np.ascontiguousarray(scene.image).tobytes()
    depth_mm = np.round(scene.depth * 1000.0).astype("<u2")
    k = [float(v) for v in scene.camera.matrix.reshape(-1)]

    def publish_frame() -> None:
        header = Header(stamp=node.get_clock().now().to_msg(), frame_id="camera_color_optical_frame")
        info = CameraInfo(header=header, width=640, height=480, distortion_model="plumb_bob", k=k,
                          d=[0.0] * 5, r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                          p=[k[0], 0.0, k[2], 0.0, 0.0, k[4], k[5], 0.0, 0.0, 0.0, 1.0, 0.0])
        info_pub.publish(info)
        depth_pub.publish(Image(header=header, width=640, height=480, encoding="16UC1", is_bigendian=0,
                                step=1280, data=depth_mm.tobytes()))
        image_pub.publish(Image(header=header, width=640, height=480, encoding="rgb8", is_bigendian=0,
                                step=1920, data=image_data))

    node.create_timer(0.2, publish_frame)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    deadline = started + args.timeout

    def wait(predicate, until: float):
        with condition:
            while not predicate():
                remaining = until - time.monotonic()
                if remaining <= 0 or node_process.poll() is not None:
                    return predicate()
                condition.wait(min(remaining, 0.2))
            return predicate()

    try:
        # The node subscribes to command_text as soon as it starts; the model loads meanwhile.
        if not wait(lambda: text_pub.get_subscription_count() > 0, deadline):
            print(f"ERROR: the perception node never subscribed to {namespace}/command_text "
                  f"(node exit code: {node_process.poll()}).", file=sys.stderr)
            return 1
        print(f"Sending {args.command!r} on {namespace}/command_text", flush=True)
        text_pub.publish(String(data=args.command))
        if not wait(lambda: any(a.prompt == args.command for a in answers), deadline):
            print(f"ERROR: no answer on {namespace}/instances within {args.timeout:.0f} s "
                  "(see the node's log above).", file=sys.stderr)
            return 1
        answer = next(a for a in answers if a.prompt == args.command)
        if not answer.success:
            print(f"ERROR: the node answered with success=false: {answer.error}", file=sys.stderr)
            return 1
        report(answer, scene)
        overlay = wait(lambda: next((o for o in overlays if o.header == answer.header), None),
                       min(deadline, time.monotonic() + 10))
        if overlay is None:
            print("WARNING: no overlay image arrived for the answer.", file=sys.stderr)
        else:
            output = Path(args.output)
            output.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(output), image_to_rgb(overlay)[..., ::-1])
            print(f"Overlay written to {output.resolve()}", flush=True)
        return 0
    finally:
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def report(answer, scene) -> None:
    """Print the instances and, for each, the best-matching ground-truth object of the scene."""
    from xsam_engine.masks import mask_iou

    stamp = answer.header.stamp
    print(f"\nAnswer for {answer.prompt!r}: task {answer.task}, {len(answer.instances)} instance(s), image "
          f"{answer.image_width}x{answer.image_height}, header stamp {stamp.sec}.{stamp.nanosec:09d} "
          f"frame '{answer.header.frame_id}', tracking={answer.tracking}")
    for instance in answer.instances:
        roi = instance.roi
        line = (f"  #{instance.id} {instance.label!r} score {instance.score:.3f}  box x={roi.x_offset} y={roi.y_offset} "
                f"w={roi.width} h={roi.height}  area {instance.area} px")
        if instance.has_3d:
            c = instance.centroid
            line += f"  centroid ({c.x:+.3f}, {c.y:+.3f}, {c.z:.3f}) m from {instance.depth_pixels} depth pixels"
        print(line)
        mask = np.zeros((answer.image_height, answer.image_width), bool)
        crop = np.frombuffer(bytes(instance.mask.data), np.uint8).reshape(instance.mask.height, instance.mask.step)
        mask[roi.y_offset:roi.y_offset + roi.height, roi.x_offset:roi.x_offset + roi.width] = crop[:, :roi.width] > 0
        best = max(scene.objects, key=lambda o: mask_iou(mask, scene.mask(o.instance_id)))
        truth = scene.centroid_3d(best.instance_id)
        text = f"     ground truth: {best.name}, mask IoU {mask_iou(mask, scene.mask(best.instance_id)):.3f}"
        if instance.has_3d:
            error = np.linalg.norm(np.array([instance.centroid.x, instance.centroid.y, instance.centroid.z]) - truth)
            text += f", centroid error {error * 1000:.1f} mm"
        print(text)
    timings = ", ".join(f"{t.stage} {t.milliseconds:.0f}" for t in answer.timings)
    print(f"  stage times (ms): {timings}\n", flush=True)


if __name__ == "__main__":
    sys.exit(main())
