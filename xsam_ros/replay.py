"""Replay a recorded bag through the perception pipeline, without ROS running: results into an MCAP file.

    python -m xsam_ros.replay BAG --image-topic TOPIC [--depth-topic TOPIC --camera-info-topic TOPIC]
        (--command TEXT | --command-topic TOPIC) --output OUT.mcap [--realtime] [--model DIR]
        [--params-file YAML] [--namespace NS] [--device DEVICE] [--no-progress]

BAG is a rosbag2 bag (directory, sqlite3 or mcap storage) or an .mcap / .db3 file. Every image is
answered in bag order by the node's own pipeline (``replayer.Replayer``; README "Replay a bag").
The output holds what the node would have published, stamped with the input's log times and
carrying the input images' headers: ``<ns>/instances``, ``<ns>/overlay``, ``<ns>/markers`` and
``<ns>/perception_node/instance_points``.

Exit status: 0 done, 1 the bag or the model could not be used (the message says why), 2 bad
arguments, 130 interrupted (Ctrl-C / SIGTERM; the output written so far is a complete, readable
MCAP file).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from .bag_io import BagError, BagInput, McapOutput
from .reporting import LogThrottle, Problem, Reporter
from .replayer import IMAGE_TYPES, SEGMENTATION_COMMAND, STRING, InputTopics, OutputTopics, Replayer, ReplayStats


class ConsoleReporter(Reporter):
    """Problems and notes on stderr, at most one line per problem key and period (as the node logs them)."""

    def __init__(self, write=None) -> None:
        super().__init__()
        self._write = write or (lambda text: print(text, file=sys.stderr))
        self._throttle = LogThrottle()

    def problem(self, problem: Problem) -> None:
        super().problem(problem)
        allowed, suppressed = self._throttle.allow(problem.key, problem.period_s)
        if allowed:
            more = f" ({suppressed} similar message(s) suppressed)" if suppressed else ""
            self._write(f"[{problem.level}] {problem.text}{more}")

    def note(self, text: str) -> None:
        super().note(text)
        self._write(f"[info] {text}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m xsam_ros.replay", description=__doc__.split("\n\n")[0],
        epilog="Open OUT.mcap in Foxglove (README 'Replay a bag'), or: ros2 bag info OUT.mcap; ros2 bag play OUT.mcap")
    parser.add_argument("bag", type=Path, help="rosbag2 bag directory, or an .mcap / .db3 file")
    parser.add_argument("--image-topic", required=True,
                        help="sensor_msgs/Image or CompressedImage topic, e.g. /camera/color/image_raw")
    parser.add_argument("--depth-topic", help="registered depth (16UC1 mm / 32FC1 m), e.g. "
                        "/camera/aligned_depth_to_color/image_raw; with --camera-info-topic")
    parser.add_argument("--camera-info-topic", help="sensor_msgs/CameraInfo of the image, e.g. /camera/color/camera_info")
    commands = parser.add_mutually_exclusive_group(required=True)
    commands.add_argument("--command", help="natural command applied to every image (continuous, e.g. "
                          "'grasp the red cup')")
    commands.add_argument("--command-topic", help="the bag's commands: std_msgs/String or xsam_ros/SegmentationCommand")
    parser.add_argument("--output", "-o", type=Path, required=True, help="the MCAP file to write (must not exist)")
    parser.add_argument("--realtime", action="store_true", help="mimic the live node at the recorded rate: an image "
                        "arriving while the previous one is processed is replaced by newer ones (newest wins)")
    parser.add_argument("--model", default=None, help="model directory (save_pretrained); default: the node's "
                        "model_path parameter, else the built-in demo model")
    parser.add_argument("--params-file", type=Path, help="the node's ROS parameter file (e.g. config/perception.yaml)")
    parser.add_argument("--namespace", default="/xsam", help="namespace of the output topics (default /xsam, the "
                        "launch file's)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda (default: the device parameter)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    options = parser.parse_args(argv)
    if (options.depth_topic is None) != (options.camera_info_topic is None):
        parser.error("--depth-topic and --camera-info-topic go together (3D needs both)")
    if options.output.suffix != ".mcap":
        parser.error(f"--output {options.output}: give a file name ending in .mcap")
    if options.output.exists():
        parser.error(f"--output {options.output} exists; remove it or choose another name")
    return options


def node_parameters(options: argparse.Namespace) -> dict:
    """The node's parameters: defaults, then --params-file, then --model / --device; checked by the node's rules."""
    from . import parameters

    values = parameters.defaults()
    if options.params_file is not None:
        import yaml

        try:
            document = yaml.safe_load(options.params_file.read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise BagError(f"--params-file {options.params_file}: {error}") from error
        values.update(_file_parameters(document, options.params_file))
    if options.model is not None:
        values["model_path"] = options.model
    if options.device is not None:
        values["device"] = options.device
    errors = parameters.validate_all(values)
    if errors:
        raise BagError("invalid parameters: " + "; ".join(errors))
    return values


def _file_parameters(document, path: Path) -> dict:
    """The ``ros__parameters`` of every node section of a ROS 2 parameter file (BagError when the layout differs)."""
    layout = ("a ROS 2 parameter file maps node names to ros__parameters, e.g. "
              "'/**: {ros__parameters: {score_threshold: 0.5}}' (see config/perception.yaml)")
    if not isinstance(document, dict):
        raise BagError(f"--params-file {path}: holds a {type(document).__name__}, not a mapping; {layout}")
    values: dict = {}
    for node, section in document.items():  # "/**", "/xsam/perception_node", ...
        parameters = (section or {}).get("ros__parameters") or {} if isinstance(section, (dict, type(None))) else None
        if not isinstance(parameters, dict):
            raise BagError(f"--params-file {path}: the section {node!r} is not of the form "
                           f"{{ros__parameters: {{name: value}}}}; {layout}")
        values.update(parameters)
    return values


def check_topics(bag: BagInput, options: argparse.Namespace) -> InputTopics:
    """The topics, checked against what the bag holds (BagError naming what it holds otherwise)."""
    if bag.require(options.image_topic, IMAGE_TYPES, "--image-topic").count == 0:
        raise BagError(f"--image-topic {options.image_topic}: the bag holds no message on this topic, so there is "
                       f"nothing to replay (was the camera publishing while recording?). {bag.path} holds:\n"
                       f"{bag.describe()}")
    if options.depth_topic:
        bag.require(options.depth_topic, ("sensor_msgs/msg/Image",), "--depth-topic")
        bag.require(options.camera_info_topic, ("sensor_msgs/msg/CameraInfo",), "--camera-info-topic")
    if options.command_topic:
        bag.require(options.command_topic, (STRING, SEGMENTATION_COMMAND), "--command-topic")
    return InputTopics(options.image_topic, options.depth_topic, options.camera_info_topic, options.command_topic)


def check_command(text: str | None, values: dict) -> None:
    """--command parsed as the node parses command_text (BagError with the reason when it is refused)."""
    if text is None:
        return
    from std_msgs.msg import Header

    from .pipeline import text_job

    _, error = text_job(text, Header(), values, 0)
    if error:
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise BagError(f"--command {shown!r}: {error}")


def summary(stats: ReplayStats, output: McapOutput, seconds: float, interrupted: bool, bag: BagInput) -> str:
    rate = stats.frames_processed / seconds if seconds > 0 else 0.0
    answers = stats.results + stats.errors  # every InstanceMaskArray written, success=false ones included
    lines = [
        ("Interrupted" if interrupted else "Done") + f" in {seconds:.1f} s: {stats.frames_read} image(s) read, "
        f"{stats.frames_processed} processed ({rate:.2f} frames/s)" + (
            f", {stats.frames_skipped} skipped (realtime: newest wins)" if stats.frames_skipped else "")
        + (f", {stats.unreadable} unreadable message(s) skipped" if stats.unreadable else "") + ".",
        f"Commands: {stats.commands} ({stats.commands_rejected} rejected). Results: {answers} "
        f"({stats.errors} with success=false), {stats.instances} instance(s), "
        f"{stats.instances / answers if answers else 0.0:.2f} per result.",
    ]
    stages = stats.mean_stage_ms()
    if stages:
        lines.append("Mean stage times: " + ", ".join(f"{stage} {ms:.1f} ms" for stage, ms in stages.items()) + ".")
    written = ", ".join(f"{topic} ({count})" for topic, count in output.counts.items()) or "nothing"
    lines.append(f"Wrote {output.path}: {written}.")
    lines += [f"Warning: {text}" for text in bag.warnings + ([bag.stopped_early] if bag.stopped_early else [])]
    return "\n".join(lines)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    from tqdm import tqdm

    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM ends the run like Ctrl-C: output closed
    try:
        with BagInput(options.bag) as bag:
            topics = check_topics(bag, options)
            values = node_parameters(options)
            check_command(options.command, values)
            for warning in bag.warnings:
                print(f"[warning] {warning}", file=sys.stderr)
            from .model import ModelLoadError, load_model, model_name

            try:
                loaded = load_model(values)
            except ModelLoadError as error:
                raise BagError(f"model not available: {error}") from error
            print(loaded.describe(model_name(values)), file=sys.stderr)
            if loaded.fallback_warning():  # --device / the params file's backend could not run here (as the node warns)
                print(f"[warning] {loaded.fallback_warning()}", file=sys.stderr)
            total = bag.topics[topics.image].count
            with tqdm(total=total, unit="frame", desc="replay", disable=True if options.no_progress else None,
                      dynamic_ncols=True) as progress:
                reporter = ConsoleReporter(lambda text: progress.write(text, file=sys.stderr))
                return _replay(bag, topics, values, loaded.predictor, reporter, options, progress)
    except BagError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the output was opened
        print(f"Interrupted before the replay started (while reading the bag or loading the model); "
              f"{options.output} was not written.", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_replay(bag: BagInput, topics: InputTopics, values: dict, predictor, reporter: Reporter, output_path: Path,
               command: str | None = None, realtime: bool = False, namespace: str = "/xsam",
               progress=None) -> tuple[ReplayStats, McapOutput, bool]:
    """Replay ``bag`` into a new MCAP file; (statistics, the closed output, whether it was interrupted).

    Ctrl-C (KeyboardInterrupt, also raised for SIGTERM by ``main``) ends the loop; the output is
    closed in any case, so what was written is a complete MCAP file.
    """
    output = McapOutput(output_path)
    interrupted = False
    replayer = Replayer(predictor, output, topics, values, reporter, command=command, realtime=realtime,
                        outputs=OutputTopics.for_node(namespace))
    update = progress.update if progress is not None else (lambda count: None)
    try:
        for record in bag.records(topics.all()):
            update(replayer.feed(record))
        update(replayer.finish())
    except KeyboardInterrupt:
        interrupted = True
    finally:
        output.close()  # the summary and index: a complete, readable file, also after Ctrl-C / SIGTERM
    return replayer.stats, output, interrupted


def _replay(bag: BagInput, topics: InputTopics, values: dict, predictor, reporter: Reporter,
            options: argparse.Namespace, progress) -> int:
    started = time.monotonic()
    stats, output, interrupted = run_replay(bag, topics, values, predictor, reporter, options.output, options.command,
                                            options.realtime, options.namespace, progress)
    progress.close()
    print(summary(stats, output, time.monotonic() - started, interrupted, bag), file=sys.stderr)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
