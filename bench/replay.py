"""Bag replay throughput against the live node's tracked frame rate: same model, same frames, one run.

The recording: a 30-frame tabletop sequence (held-out seed 900,000,008, 640x480, the red cup moving)
with RGB, 16UC1 depth and camera_info, written as a rosbag2 bag (mcap storage) by
tests/bag_fixtures.py.

1. Replay: ``xsam_ros.replay.run_replay`` in this process with a continuous "grasp the red cup":
   every frame in bag order, each answer written to MCAP (instances, overlay, markers, point cloud).
   frames/s = frames / wall time of the loop (model loading excluded).
2. Live node: ``python -m xsam_ros.perception_node`` in its own process (lifecycle node, autostart),
   this process publishes the same frames (image, depth, camera_info) one at a time, each after the
   previous frame's result arrived (republished after 5 s without an answer), with a subscriber on instances, overlay, markers and
   ~/instance_points (so the node builds everything the replay writes), after depth has been seen
   flowing (warm-up frames). frames/s = tracked frames / wall time from the first tracked frame's
   publication to the last result; ``with_3d`` counts the tracked results whose depth arrived in time.

Both use the node's default parameters (the same CPU thread count). The machine's load average is
recorded (other jobs on a shared machine slow both).

    python bench/replay.py            # results: bench/results/replay.json and replay.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from common import RESULTS, latency_stats, machine_info  # noqa: E402

SEED = 900_000_008
WIDTH, HEIGHT = 640, 480
COMMAND = "grasp the red cup"


def measure_replay(bag: Path, output: Path) -> dict:
    from bag_fixtures import TOPICS

    from xsam_ros import parameters
    from xsam_ros.bag_io import BagInput
    from xsam_ros.model import load_model
    from xsam_ros.replay import run_replay
    from xsam_ros.replayer import InputTopics
    from xsam_ros.reporting import Reporter

    values = parameters.defaults()
    loaded = load_model(values)
    with BagInput(bag) as source:
        started = time.perf_counter()
        stats, written, _ = run_replay(source, InputTopics(TOPICS.image, TOPICS.depth, TOPICS.camera_info),
                                       values, loaded.predictor, Reporter(), output, command=COMMAND)
        seconds = time.perf_counter() - started
    return {"frames": stats.frames_processed, "seconds": round(seconds, 3), "instances": stats.instances,
            "frames_per_s": round(stats.frames_processed / seconds, 3), "model_load_s": round(loaded.seconds, 2),
            "cpu_threads": loaded.threads, "mean_stage_ms": {k: round(v, 2) for k, v in stats.mean_stage_ms().items()},
            "written": dict(written.counts), "output_mb": round(output.stat().st_size / 2**20, 1)}


def measure_node(frames: list, workdir: Path) -> dict:
    from node_driver import (
        Driver, NodeProcess, camera_info_msg, depth_msg, image_msg, module_ros_env, scene_frames, stages, stamp_header,
        wait_for_node_inputs, warm_up_depth,
    )
    from xsam_ros.msg import SegmentationCommand

    env, domain_id, namespace = module_ros_env("benchreplay")
    node = NodeProcess(env, namespace, workdir, {"command_timeout_s": 300.0})  # the shipped parameters
    driver = Driver(domain_id, namespace)
    try:
        if not node.wait_for_log("Model ready", 300):
            raise RuntimeError(f"the node did not load the model:\n{node.log()[-2000:]}")
        driver.subscribe_overlay()
        driver.subscribe_markers()
        driver.subscribe_points()
        wait_for_node_inputs(driver, [driver.image_pub, driver.depth_pub, driver.info_pub, driver.command_pub])
        time.sleep(1.0)  # the node's publishers match the new subscriptions
        warm_up_depth(driver, scene_frames(driver, frames[0], 40_000, depth_encoding="16UC1"))  # depth flows
        # The replay's --command is continuous; on the node that is a SegmentationCommand with continuous=true.
        driver.command_pub.publish(SegmentationCommand(text=COMMAND, continuous=True))
        time.sleep(0.5)  # the reliable command arrives before the first frame
        latencies, results, first_sent = [], [], None
        for index, scene in enumerate(frames):
            header = stamp_header(50_000 + index)
            messages = [(driver.info_pub, camera_info_msg(scene.camera, header)),
                        (driver.depth_pub, depth_msg(scene.depth, header, "16UC1")),
                        (driver.image_pub, image_msg(scene.image, header))]
            sent = time.monotonic()
            first_sent = first_sent if index != 1 else sent
            # Republished only if no answer came within 5 s (a frame lost before discovery settled).
            answer = driver.publish_frames_until(lambda _: messages, lambda s=header.stamp.sec: driver.result_for(
                predicate=lambda m: m.header.stamp.sec == s), 300, period=5.0)
            if answer is None:
                raise RuntimeError(f"no result for frame {index}:\n{node.log()[-2000:]}")
            latencies.append(time.monotonic() - sent)
            results.append(answer)
        seconds = time.monotonic() - first_sent
        tracked = [r for r in results if r.tracking]
        means: dict[str, float] = {}
        for result in tracked:
            for stage, milliseconds in stages(result).items():
                means[stage] = means.get(stage, 0.0) + milliseconds / len(tracked)
        return {"tracked_frames": len(tracked), "seconds": round(seconds, 3),
                "frames_per_s": round(len(tracked) / seconds, 3), "tracked_latency": latency_stats(latencies[1:]),
                "mean_stage_ms": {k: round(v, 2) for k, v in means.items()},
                "with_instance": sum(bool(r.instances) for r in tracked),
                "with_3d": sum(bool(r.instances and r.instances[0].has_3d) for r in tracked),
                "clouds_received": len(driver.points)}
    finally:
        driver.close()
        node.stop()


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    replay, node = report["replay"], report["node"]
    axes[0].bar(["replay (bag -> MCAP)", "live node (tracked)"], [replay["frames_per_s"], node["frames_per_s"]],
                color=["tab:blue", "tab:orange"])
    axes[0].set_ylabel("frames / s")
    axes[0].set_title(f"{WIDTH}x{HEIGHT}, shipped model, continuous '{COMMAND}'")
    stages = [s for s in replay["mean_stage_ms"] if s in node["mean_stage_ms"] and s not in ("queue", "llm")]
    positions = range(len(stages))
    axes[1].barh([p - 0.2 for p in positions], [replay["mean_stage_ms"][s] for s in stages], height=0.4,
                 label="replay")
    axes[1].barh([p + 0.2 for p in positions], [node["mean_stage_ms"][s] for s in stages], height=0.4,
                 label="live node")
    axes[1].set_yticks(list(positions), stages)
    axes[1].set_xlabel("mean ms per tracked frame")
    axes[1].legend()
    machine = report["machine"]
    figure.suptitle(f"{machine['cpu']} ({machine['cores']} cores), load average {report['load_average'][0]:.1f} "
                    f"-> {report['load_average_end'][0]:.1f}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=str(RESULTS / "replay.json"))
    args = parser.parse_args()
    from bag_fixtures import write_sequence_bag

    from xsam_engine.tabletop.sequences import generate_sequence

    frames = generate_sequence(SEED, 30, WIDTH, HEIGHT, include=[("cup", "red")], moving_instance=1)
    report: dict = {"benchmark": "bag replay frames/s vs the live node's tracked frames/s (same model, frames, size)",
                    "command": "python bench/replay.py", "machine": machine_info(),
                    "load_average": [round(v, 2) for v in os.getloadavg()],
                    "sequence": {"seed": SEED, "frames": len(frames), "size": f"{WIDTH}x{HEIGHT}", "command": COMMAND}}
    with tempfile.TemporaryDirectory(prefix="xsam_replay_bench_") as workdir:
        bag = write_sequence_bag(Path(workdir) / "bag", frames, "mcap")
        report["replay"] = measure_replay(bag, Path(workdir) / "out.mcap")
        print(f"replay: {report['replay']['frames_per_s']} frames/s", flush=True)
        report["node"] = measure_node(frames, Path(workdir))
        print(f"live node: {report['node']['frames_per_s']} tracked frames/s", flush=True)
    report["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    report["replay_over_node"] = round(report["replay"]["frames_per_s"] / report["node"]["frames_per_s"], 3)
    output = Path(args.output)
    output.write_text(json.dumps(report, indent=1) + "\n")
    plot(report, output.with_suffix(".png"))
    print(f"wrote {output} and {output.with_suffix('.png')}")


if __name__ == "__main__":
    main()
