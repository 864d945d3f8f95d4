"""ROS overhead per frame and the perception node's end-to-end latency, with real rclpy.

Part 1, ROS overhead (in this process, no model): for 640x480 and 1280x720 frames with a
realistic result (6 objects from a generated tabletop scene, their masks, 3D estimates, the
16UC1 label image), time every step the node adds around inference:
  in:  deserialise the sensor_msgs/Image (what rclpy does before the callback) + `image_to_rgb`
  out: `result_to_msg` + `rclpy.serialization.serialize_message` + `publish` (to a subscriber in
       another process, so the DDS write is real).
Target: <= 5 ms per 1280x720 frame on this CPU.

Part 2, end to end: the node runs in its own process (`python -m xsam_ros.perception_node`, as
`ros2 run` would); this process publishes a frame and measures the time until the
InstanceMaskArray for that frame's stamp arrives (monotonic clock of this process), for the first
frame of a referring command (LLM included) and for tracked frames (continuous command, cached
condition). One frame in flight at a time. The node's own per-stage timings in the message give
the split into inference and ROS/transport.

    python bench/ros_node.py                         # both parts, tiny model + the default model if present
    python bench/ros_node.py --part overhead

Results: bench/results/ros_node.json and ros_node.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from common import RESULTS, latency_stats, machine_info  # noqa: E402

SIZES = ((640, 480), (1280, 720))
OVERHEAD_TARGET_MS = 5.0

SUBSCRIBER_CODE = """
import sys, rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy
from xsam_ros.msg import InstanceMaskArray
rclpy.init()
node = rclpy.create_node("xsam_bench_sink")
qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
count = [0]
node.create_subscription(InstanceMaskArray, sys.argv[1], lambda m: count.__setitem__(0, count[0] + 1), qos)
print("ready", flush=True)
while rclpy.ok():
    rclpy.spin_once(node, timeout_sec=0.5)
"""


def realistic_result(width: int, height: int, seed: int = 5):
    """A SegmentationResult with the scene's object masks (what a good model would return)."""
    from xsam_engine import postprocessing
    from xsam_engine.requests import Task
    from xsam_engine.results import SegmentationResult
    from xsam_engine.tabletop.scenes import generate_scene

    scene = generate_scene(seed, width=width, height=height, num_objects=(6, 6))
    labels = tuple(f"object {k}" for k in range(1, len(scene.objects) + 1))
    instances = [postprocessing.make_instance(scene.instance_map == k, k - 1, 0.9 - 0.05 * k, labels)
                 for k in range(1, len(scene.objects) + 1)]
    result = SegmentationResult(task=Task.INSTANCE, instances=instances, labels=labels, image_size=(height, width), text="")
    return scene, result


def measure_overhead(repeats: int) -> list[dict]:
    import os

    import rclpy
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image

    from node_driver import image_msg, stamp_header
    from xsam_ros import conversions
    from xsam_ros.geometry import object_geometry
    from xsam_ros.msg import InstanceMaskArray

    env = dict(os.environ, ROS_DOMAIN_ID=str(70 + os.getpid() % 20), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONPATH=str(ROOT))
    topic = f"/xsam_bench_{os.getpid()}/instances"
    sink = subprocess.Popen([sys.executable, "-c", SUBSCRIBER_CODE, topic], env=env, stdout=subprocess.PIPE, text=True)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env["ROS_DOMAIN_ID"]))
    node = rclpy.create_node("xsam_bench_source", context=context)
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
    publisher = node.create_publisher(InstanceMaskArray, topic, qos)
    rows = []
    try:
        sink.stdout.readline()
        deadline = time.monotonic() + 20
        while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        for width, height in SIZES:
            scene, result = realistic_result(width, height)
            header = stamp_header(1, 0)
            serialized_image = serialize_message(image_msg(scene.image, header))
            matrix = scene.camera.matrix
            geometries = [object_geometry(i.mask[i.box_xyxy[1]:i.box_xyxy[3], i.box_xyxy[0]:i.box_xyxy[2]], scene.depth, matrix,
                                          0.05, 10.0, roi=(i.box_xyxy[0], i.box_xyxy[1], i.box_xyxy[2] - i.box_xyxy[0],
                                                           i.box_xyxy[3] - i.box_xyxy[1])) for i in result.instances]
            times: dict[str, list[float]] = {k: [] for k in ("deserialize_image", "image_to_rgb", "result_to_msg",
                                                              "serialize_result", "publish", "total")}
            for _ in range(repeats + 2):
                t0 = time.perf_counter()
                incoming = deserialize_message(serialized_image, Image)
                t1 = time.perf_counter()
                conversions.image_to_rgb(incoming)
                t2 = time.perf_counter()
                message = conversions.result_to_msg(result, header, result.instances, list(range(1, len(result.instances) + 1)),
                                                    geometries, "bench", "bench", True, True, {"mask_encoder": 0.1})
                t3 = time.perf_counter()
                payload = serialize_message(message)
                t4 = time.perf_counter()
                publisher.publish(message)  # rclpy serialises again inside publish: the real cost
                t5 = time.perf_counter()
                for key, value in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0 - (t4 - t3))):
                    times[key].append(value)
            row = {"size": f"{width}x{height}", "instances": len(result.instances), "result_bytes": len(payload),
                   "image_bytes": len(serialized_image)}
            for key, values in times.items():
                row[key] = latency_stats(values[2:])
            row["total_p50_ms"] = row["total"]["p50_ms"]
            row["target_ms"] = OVERHEAD_TARGET_MS
            row["meets_target"] = row["total_p50_ms"] <= OVERHEAD_TARGET_MS
            rows.append(row)
            print(f"overhead {row['size']}: {row['total_p50_ms']:.2f} ms p50 (result {len(payload) / 1e6:.2f} MB)", flush=True)
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        sink.kill()
        sink.wait(5)
    return rows


def measure_end_to_end(model_dir: Path, label: str, frames_per_size: int, workdir: Path) -> dict:
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    from node_driver import Driver, NodeProcess, image_msg, module_ros_env, stages, stamp_header, wait_for_node_inputs
    from xsam_engine.tabletop.scenes import generate_scene
    from xsam_ros.msg import InstanceMaskArray, SegmentationCommand

    env, domain_id, namespace = module_ros_env(f"bench{label}")
    node = NodeProcess(env, namespace, workdir, {"model_path": str(model_dir), "use_depth": False,
                                                 "publish_label_image": True, "command_timeout_s": 300.0})
    driver = Driver(domain_id, namespace)
    arrivals: dict[int, float] = {}
    messages: dict[int, object] = {}

    def on_result(message) -> None:
        arrivals.setdefault(message.header.stamp.sec, time.monotonic())
        messages.setdefault(message.header.stamp.sec, message)

    reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
    driver.node.create_subscription(InstanceMaskArray, "instances", on_result, reliable)
    result: dict = {"model": label, "sizes": []}
    try:
        if not node.wait_for_log("Model ready", 300):
            raise RuntimeError(f"the node did not load the model:\n{node.log()[-2000:]}")
        wait_for_node_inputs(driver, [driver.image_pub, driver.command_pub])
        stamp = 100
        for width, height in SIZES:
            scene = generate_scene(7, width=width, height=height)
            driver.command_pub.publish(SegmentationCommand(request_id=f"e2e{width}", text="red cup", continuous=True))
            time.sleep(0.5)  # let the reliable command arrive before the first frame (commands wait for the next image)
            latencies, tracked, overhead = [], [], []
            for index in range(frames_per_size + 1):
                stamp += 1
                message = image_msg(scene.image, stamp_header(stamp))
                sent = time.monotonic()
                driver.image_pub.publish(message)
                if not driver.wait_for(lambda s=stamp: s in arrivals, 300):
                    raise RuntimeError(f"no result for frame {stamp}:\n{node.log()[-2000:]}")
                latency = arrivals[stamp] - sent
                answer = messages[stamp]
                inside = sum(v for k, v in stages(answer).items()) / 1000.0
                (tracked if answer.tracking else latencies).append(latency)
                if answer.tracking:
                    overhead.append(latency - inside)
                time.sleep(0.05)
            driver.command_pub.publish(SegmentationCommand(request_id="stop", text="", continuous=False))
            row = {"size": f"{width}x{height}", "first_frame_with_llm_ms": round(1000 * latencies[0], 2) if latencies else None,
                   "tracked_frame": latency_stats(tracked),
                   "tracked_outside_node_stages": latency_stats(overhead) if overhead else None,
                   "node_stage_ms_last_frame": stages(messages[stamp])}
            result["sizes"].append(row)
            print(f"e2e {label} {row['size']}: first (LLM) {row['first_frame_with_llm_ms']} ms, tracked p50 "
                  f"{row['tracked_frame']['p50_ms']:.1f} ms", flush=True)
    finally:
        driver.close()
        node.stop()
    return result


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    overhead = report.get("overhead", [])
    if overhead:
        steps = ["deserialize_image", "image_to_rgb", "result_to_msg", "publish"]
        bottom = [0.0] * len(overhead)
        for step in steps:
            values = [row[step]["p50_ms"] for row in overhead]
            axes[0].bar([row["size"] for row in overhead], values, bottom=bottom, label=step)
            bottom = [b + v for b, v in zip(bottom, values)]
        axes[0].axhline(OVERHEAD_TARGET_MS, color="red", linestyle="--", label="target 5 ms")
        axes[0].set_ylabel("ms per frame (p50)")
        axes[0].set_title("ROS overhead per frame (conversion + serialisation + publish)")
        axes[0].legend(fontsize=8)
    e2e = report.get("end_to_end", [])
    labels, values, inside = [], [], []
    for model in e2e:
        for row in model["sizes"]:
            labels.append(f"{model['model']}\n{row['size']}")
            values.append(row["tracked_frame"]["p50_ms"])
            inside.append(row["tracked_frame"]["p50_ms"] - (row["tracked_outside_node_stages"] or {}).get("p50_ms", 0.0))
    if labels:
        axes[1].bar(labels, values, label="image published -> result received")
        axes[1].bar(labels, inside, label="inside the node's timed stages", alpha=0.7)
        axes[1].set_yscale("log")
        axes[1].set_ylabel("ms (p50, log)")
        axes[1].set_title("Tracked frame, end to end (node in its own process)")
        axes[1].legend(fontsize=8)
    figure.suptitle(f"xsam_ros on {report['machine']['cpu']} ({report['machine']['cores']} cores, CPU only)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["all", "overhead", "e2e"], default="all")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--frames", type=int, default=10, help="tracked frames per image size (end to end)")
    parser.add_argument("--model-dir", default=None, help="trained model to measure too (default: xsam_engine/default_model)")
    parser.add_argument("--output", default=str(RESULTS / "ros_node.json"))
    args = parser.parse_args()
    report: dict = {
        "benchmark": "xsam_ros ROS overhead per frame and node end-to-end latency (real rclpy, Fast DDS, localhost)",
        "command": f"python bench/ros_node.py --part {args.part}" + (f" --model-dir {args.model_dir}" if args.model_dir else ""),
        "machine": machine_info(),
    }
    if args.part in ("all", "overhead"):
        report["overhead"] = measure_overhead(args.repeats)
    if args.part in ("all", "e2e"):
        from node_driver import DEFAULT_MODEL_WEIGHTS, save_tiny_model

        report["end_to_end"] = []
        with tempfile.TemporaryDirectory(prefix="xsam_node_bench_") as workdir:
            workdir = Path(workdir)
            models = [("tiny (random weights)", save_tiny_model(workdir / "tiny"))]
            trained = Path(args.model_dir) if args.model_dir else DEFAULT_MODEL_WEIGHTS.parent
            if (trained / "model.safetensors").is_file():
                models.append(("tabletop trained model", trained))
            for label, directory in models:
                report["end_to_end"].append(measure_end_to_end(directory, label.split()[0], args.frames, workdir))
                report["end_to_end"][-1]["model"] = label
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, output.with_suffix(".png"))
    print(f"wrote {output} and {output.with_suffix('.png')}")


if __name__ == "__main__":
    main()
