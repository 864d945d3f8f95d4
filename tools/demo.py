"""End-to-end demo: a robot asks the perception node to "grasp the red cup" on a generated tabletop.

    python tools/demo.py            # what `make demo` runs
    python tools/demo.py --command "find all bowls" --seed 5 --output out/bowls.png

Not part of the installed package (CMakeLists.txt installs xsam_ros/, and robots need no scene
generator); it drives the node with the same helpers as the node tests (tests/node_driver.py:
``NodeProcess``, ``Driver``).

What it does:
1. starts ``perception_node --autostart`` as its own process (default model unless --model-path),
   in a private namespace, with config/perception.yaml; the node configures and activates itself
   (lifecycle), loading the model, and its log lines are echoed with the prefix ``[node]``;
2. plays a camera: publishes a generated 640x480 tabletop scene (rgb8 image, 16UC1 depth in
   millimetres, camera_info) at 5 Hz with best-effort QoS, as many camera drivers do. This
   process loads the shipped Fast DDS profile (config/fastdds_large_images.xml), without which
   large best-effort images are lost (README, "Camera transport");
3. sends the command on ``command_text`` once the node subscribes (it is active) and waits for
   the InstanceMaskArray answer;
4. prints every instance (label, score, box, area, 3D centroid) next to the scene's ground
   truth, writes the overlay the node rendered to ``out/demo_overlay.png`` and shuts the node
   down (SIGINT). Exit code 0 on an answer with success=true, 1 otherwise (with the reason).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from node_driver import (  # noqa: E402  (tests/node_driver.py: the one driver of the node)
    FASTDDS_PROFILE, Driver, NodeProcess, mask_from_msg, scene_frames, stages,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--command", default="grasp the red cup", help="natural-language command to send")
    parser.add_argument("--seed", type=int, default=23,
                        help="tabletop scene seed; the scene always contains a red cup (placed first)")
    parser.add_argument("--model-path", default="", help="model directory; empty = the built-in demo model")
    parser.add_argument("--output", default="out/demo_overlay.png", help="where to write the overlay PNG")
    parser.add_argument("--timeout", type=float, default=50.0, help="seconds to wait for the answer")
    parser.add_argument("--reliability", choices=("best_effort", "reliable"), default="best_effort",
                        help="QoS reliability of the demo camera's image and depth publishers")
    return parser.parse_args(argv)


def environment() -> tuple[dict, int]:
    """The node's environment and domain: the caller's ROS_DOMAIN_ID if set, localhost discovery."""
    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 80))
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
    return env, int(env["ROS_DOMAIN_ID"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    env, domain_id = environment()
    # This process publishes large best-effort images: the shared-memory profile, set before rclpy starts DDS.
    if not os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE") and not os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE"):
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(FASTDDS_PROFILE)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = env["ROS_AUTOMATIC_DISCOVERY_RANGE"]
    namespace = f"/xsam_demo_{os.getpid()}"

    from xsam_engine.tabletop.scenes import generate_scene

    scene = generate_scene(args.seed, 640, 480, include=[("cup", "red")])
    print(f"Scene {args.seed}: {', '.join(o.name for o in scene.objects)}; ROS_DOMAIN_ID={domain_id}, "
          f"namespace {namespace}", flush=True)
    with tempfile.TemporaryDirectory(prefix="xsam_demo_") as workdir:
        parameters = {"model_path": args.model_path} if args.model_path else {}
        node = NodeProcess(env, namespace, Path(workdir), parameters, echo="[node]")
        try:
            code = drive(args, scene, namespace, domain_id, started, node)
        finally:
            node_code = node.stop()
            print(f"Node stopped (exit code {node_code}); demo took {time.monotonic() - started:.1f} s.", flush=True)
    return code


def drive(args, scene, namespace: str, domain_id: int, started: float, node: NodeProcess) -> int:
    import cv2
    from std_msgs.msg import String

    from xsam_ros.conversions import image_to_rgb

    driver = Driver(domain_id, namespace, image_reliable=args.reliability == "reliable")
    driver.subscribe_overlay()
    frames = scene_frames(driver, scene, int(time.time()), depth_encoding="16UC1")
    deadline = started + args.timeout
    try:
        # The node subscribes to command_text once it is active: its model is loaded.
        while driver.text_pub.get_subscription_count() == 0:
            if time.monotonic() > deadline or not node.alive():
                print(f"ERROR: the perception node never subscribed to {namespace}/command_text "
                      f"(node exit code: {node.process.poll()}).", file=sys.stderr)
                return 1
            time.sleep(0.05)
        print(f"Sending {args.command!r} on {namespace}/command_text", flush=True)
        driver.text_pub.publish(String(data=args.command))
        answer = driver.publish_frames_until(frames, lambda: driver.result_for(prompt=args.command),
                                             max(0.0, deadline - time.monotonic()), period=0.2)
        if answer is None:
            print(f"ERROR: no answer on {namespace}/instances within {args.timeout:.0f} s "
                  "(see the node's log above).", file=sys.stderr)
            return 1
        if not answer.success:
            print(f"ERROR: the node answered with success=false: {answer.error}", file=sys.stderr)
            return 1
        report(answer, scene)
        overlay = driver.wait_for(lambda: next((o for o in driver.overlays if o.header == answer.header), None), 10)
        if overlay is None:
            print("WARNING: no overlay image arrived for the answer.", file=sys.stderr)
        else:
            output = Path(args.output)
            output.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(output), image_to_rgb(overlay)[..., ::-1])
            print(f"Overlay written to {output.resolve()}", flush=True)
        return 0
    finally:
        driver.close()


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
        mask = mask_from_msg(instance, answer.image_width, answer.image_height)
        best = max(scene.objects, key=lambda o: mask_iou(mask, scene.mask(o.instance_id)))
        text = f"     ground truth: {best.name}, mask IoU {mask_iou(mask, scene.mask(best.instance_id)):.3f}"
        if instance.has_3d:
            error = np.linalg.norm(np.array([instance.centroid.x, instance.centroid.y, instance.centroid.z])
                                   - scene.centroid_3d(best.instance_id))
            text += f", centroid error {error * 1000:.1f} mm"
        print(text)
    timings = ", ".join(f"{stage} {milliseconds:.0f}" for stage, milliseconds in stages(answer).items())
    print(f"  stage times (ms): {timings}\n", flush=True)


if __name__ == "__main__":
    sys.exit(main())
