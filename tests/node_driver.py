"""Helpers for the perception-node tests and the demo: start the node in its own process, drive it over ROS.

The one implementation of "a process that plays camera and robot for the node": the tests use it,
and so does ``tools/demo.py`` (``make demo``), which imports it from here.

``NodeProcess`` runs ``python -m xsam_ros.perception_node`` with a namespace, a parameter file
and a log file. ``Driver`` is an rclpy node in the test process that publishes images, depth,
camera_info, commands and clicks, and records everything the node publishes (instances,
overlay, markers, /diagnostics); ``wait_for`` waits on a condition variable with a timeout
(no fixed sleeps), ``publish_frames_until`` keeps a camera-like stream going until an answer
arrives.

``module_ros_env`` gives a module its own ROS_DOMAIN_ID and namespace (the conftest fixtures
are per test; a node started once per module needs them per module).
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from xsam_engine.masks import mask_iou as iou  # noqa: F401 (the tests import it from here)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_WEIGHTS = REPO_ROOT / "xsam_engine" / "default_model" / "model.safetensors"
FASTDDS_PROFILE = REPO_ROOT / "config" / "fastdds_large_images.xml"

_module_counter = itertools.count()


def module_ros_env(tag: str) -> tuple[dict, int, str]:
    """(environment, domain id, namespace) for one test module; distinct per module and pid."""
    index = next(_module_counter)
    domain_id = 1 + (os.getpid() * 7 + 53 + 11 * index) % 100
    namespace = f"/xsam_node_{tag}_{os.getpid()}_{index}"
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.pop("ROS_LOCALHOST_ONLY", None)
    env.pop("ROS_STATIC_PEERS", None)
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    env.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["RCUTILS_COLORIZED_OUTPUT"] = "0"
    return env, domain_id, namespace


def default_model_missing_reason() -> str | None:
    if DEFAULT_MODEL_WEIGHTS.is_file():
        return None
    return (f"the default model is not there yet ({DEFAULT_MODEL_WEIGHTS.relative_to(REPO_ROOT)} is missing; "
            "it is being trained) - accuracy tests run once it lands")


def save_tiny_model(directory: Path) -> Path:
    """A random-weight tiny X-SAM saved with save_pretrained (plumbing tests; answers are meaningless)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from engine_fixtures import tiny_model_and_tokenizer

    from xsam_engine.checkpoint import save_pretrained

    model, tokenizer = tiny_model_and_tokenizer()
    return save_pretrained(model, tokenizer, directory)


class NodeProcess:
    """The perception node in its own process, its output in a log file.

    ``autostart`` (default) passes ``--autostart``: the node configures and activates itself at
    start, as the launch file's ``autostart:=true`` does; with False it stays unconfigured until a
    ``Driver`` drives it through the lifecycle services (``change_state``).
    """

    def __init__(self, env: dict, namespace: str, workdir: Path, parameters: dict | None = None,
                 extra_env: dict | None = None, autostart: bool = True, echo: str | None = None) -> None:
        """``echo``: also print every line of the node's output, prefixed with it (the demo's "[node]")."""
        self.namespace = namespace
        self.log_path = workdir / f"node{namespace.replace('/', '_')}.log"
        params_path = workdir / f"params{namespace.replace('/', '_')}.yaml"
        params_path.write_text(yaml.safe_dump({"/**": {"ros__parameters": parameters or {}}}))
        self.env = dict(env)
        self.env["ROS_LOG_DIR"] = str(workdir / "ros_log")
        self.env.update(extra_env or {})
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "xsam_ros.perception_node", *(["--autostart"] if autostart else []),
             "--ros-args", "-r", f"__ns:={namespace}",
             "--params-file", str(REPO_ROOT / "config" / "perception.yaml"), "--params-file", str(params_path)],
            env=self.env, cwd=str(REPO_ROOT), stdout=self._log if echo is None else subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        self._echo = None
        if echo is not None:
            self._echo = threading.Thread(target=self._copy_output, args=(echo,), daemon=True)
            self._echo.start()

    def _copy_output(self, prefix: str) -> None:
        for line in self.process.stdout:
            self._log.write(line)
            self._log.flush()
            print(f"  {prefix} {line.rstrip()}", flush=True)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            if self.process.poll() is not None:
                return text in self.log()
            time.sleep(0.1)
        return False

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_bytes(self) -> int:
        """The process's resident memory (VmRSS in /proc/<pid>/status), in bytes."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS in /proc/{self.process.pid}/status")

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGINT, as Ctrl-C / ros2 launch do; kill if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._echo is not None:
            self._echo.join(5)
        self._log.close()
        return self.process.returncode


class Driver:
    """An rclpy node in the test process that talks to the perception node."""

    def __init__(self, domain_id: int, namespace: str, image_reliable: bool = True, sensors: bool = True) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import Point, PointStamped
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image
        from std_msgs.msg import String
        from visualization_msgs.msg import MarkerArray

        from xsam_ros.msg import InstanceMaskArray, SegmentationCommand

        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("xsam_test_driver", namespace=namespace, context=self.context)
        self.namespace = namespace
        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
        image_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2,
                               reliability=ReliabilityPolicy.RELIABLE if image_reliable else ReliabilityPolicy.BEST_EFFORT)
        node = self.node
        try:
            from rclpy.event_handler import PublisherEventCallbacks
        except ImportError:  # Humble
            from rclpy.qos_event import PublisherEventCallbacks
        # The node subscribes reliable until it sees a best-effort camera, then switches: skip rmw's
        # "incompatible QoS" warning for that moment.
        quiet = PublisherEventCallbacks(incompatible_qos=lambda event: None)
        if sensors:  # without: another process is the camera
            self.image_pub = node.create_publisher(Image, "image", image_qos, event_callbacks=quiet)
            # Depth keeps 10: with 2, a loaded machine can overwrite the depth of the very frame a
            # command is answered on before it is delivered (that frame then has, correctly, no 3D).
            depth_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=image_qos.reliability)
            self.depth_pub = node.create_publisher(Image, "depth", depth_qos, event_callbacks=quiet)
            self.info_pub = node.create_publisher(CameraInfo, "camera_info", reliable)
        self.command_pub = node.create_publisher(SegmentationCommand, "command", reliable)
        self.text_pub = node.create_publisher(String, "command_text", reliable)
        self.mouse_pub = node.create_publisher(Point, "image_mouse_left", reliable)
        self.clicked_pub = node.create_publisher(PointStamped, "clicked_point", reliable)
        self.condition = threading.Condition()
        self.instances: list = []
        self.overlays: list = []
        self.markers: list = []
        self.points: list = []
        self.diagnostics: list = []
        self._subscriptions = {}
        node.create_subscription(InstanceMaskArray, "instances", self._keep(self.instances), reliable)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._keep(self.diagnostics), reliable)
        self._overlay_type, self._marker_type, self._reliable = Image, MarkerArray, reliable
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # shutdown
            pass

    def _keep(self, store: list) -> Callable:
        def callback(msg) -> None:
            with self.condition:
                store.append(msg)
                self.condition.notify_all()
        return callback

    def subscribe_overlay(self) -> None:
        self.node.create_subscription(self._overlay_type, "overlay", self._keep(self.overlays), self._reliable)

    def subscribe_markers(self) -> None:
        self.node.create_subscription(self._marker_type, "markers", self._keep(self.markers), self._reliable)

    def subscribe_points(self):
        """Subscribe to the node's ~/instance_points (kept in ``points``); returns the subscription."""
        from sensor_msgs.msg import PointCloud2

        return self.node.create_subscription(PointCloud2, "perception_node/instance_points", self._keep(self.points),
                                             self._reliable)

    def latest_status(self):
        """The newest /diagnostics status of the perception node in this driver's namespace, or None."""
        name = f"xsam_ros: {self.namespace}/perception_node"
        for array in reversed(self.diagnostics):
            for status in array.status:
                if status.name == name:
                    return status
        return None

    def latest_values(self) -> dict[str, str]:
        status = self.latest_status()
        return {pair.key: pair.value for pair in status.values} if status is not None else {}

    def wait_for(self, predicate: Callable[[], object], timeout: float) -> object:
        """Wait until predicate() is truthy (checked whenever a message arrives); returns its value or None."""
        deadline = time.monotonic() + timeout
        with self.condition:
            while True:
                value = predicate()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.condition.wait(min(remaining, 0.2))

    def wait_for_subscriber(self, publisher, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if publisher.get_subscription_count() > 0:
                return True
            time.sleep(0.05)
        return False

    def result_for(self, request_id: str | None = None, prompt: str | None = None, after: int = 0,
                   predicate: Callable | None = None):
        """First InstanceMaskArray (index >= after) matching request_id / prompt / predicate, or None."""
        for message in self.instances[after:]:
            if request_id is not None and message.request_id != request_id:
                continue
            if prompt is not None and message.prompt != prompt:
                continue
            if predicate is not None and not predicate(message):
                continue
            return message
        return None

    def publish_frames_until(self, frames: Callable[[int], list], predicate: Callable[[], object], timeout: float,
                             period: float = 0.1, start: int = 0) -> object:
        """Publish frames(i) (a list of (publisher, msg)) every `period` s until predicate() holds."""
        deadline = time.monotonic() + timeout
        index = start
        while time.monotonic() < deadline:
            for publisher, msg in frames(index):
                publisher.publish(msg)
            index += 1
            value = self.wait_for(predicate, period)
            if value:
                return value
        return None

    def call(self, service_type, name: str, request, timeout: float = 10.0):
        client = self.node.create_client(service_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                return None
            future = client.call_async(request)
            deadline = time.monotonic() + timeout
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.02)
            return future.result() if future.done() else None
        finally:
            self.node.destroy_client(client)

    def change_state(self, node: str, transition: str, timeout: float = 180.0) -> bool | None:
        """Ask the lifecycle node ``node`` (full name) for a transition by label ("configure", "activate",
        "deactivate", "cleanup", "shutdown") through its ``change_state`` service; the response's success,
        None without an answer within ``timeout`` (the activation loads the model before it answers)."""
        from lifecycle_msgs.srv import ChangeState

        request = ChangeState.Request()
        request.transition.label = transition
        response = self.call(ChangeState, f"{node}/change_state", request, timeout)
        return None if response is None else response.success

    def get_state(self, node: str, timeout: float = 10.0) -> str | None:
        """The lifecycle state label of ``node`` from its ``get_state`` service ("unconfigured", "inactive", ...)."""
        from lifecycle_msgs.srv import GetState

        response = self.call(GetState, f"{node}/get_state", GetState.Request(), timeout)
        return None if response is None else response.current_state.label

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.context)
        self._thread.join(3.0)


# -- message builders ------------------------------------------------------------------------------


def stamp_header(sec: int, nanosec: int = 0, frame_id: str = "camera_color_optical_frame"):
    from std_msgs.msg import Header

    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = sec, nanosec
    return header


def image_msg(rgb: np.ndarray, header, encoding: str = "rgb8", padding: int = 0):
    """sensor_msgs/Image of an RGB array in the given encoding, rows padded by `padding` bytes."""
    from sensor_msgs.msg import Image

    if encoding == "rgb8":
        pixels = rgb
    elif encoding == "bgr8":
        pixels = rgb[..., ::-1]
    elif encoding == "rgba8":
        pixels = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    elif encoding == "bgra8":
        pixels = np.concatenate([rgb[..., ::-1], np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    elif encoding == "mono8":
        pixels = rgb.mean(axis=2).astype(np.uint8)[..., None]
    else:
        raise ValueError(encoding)
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, -1)
    if padding:
        rows = np.concatenate([rows, np.zeros((height, padding), np.uint8)], axis=1)
    return Image(header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
                 step=rows.shape[1], data=rows.tobytes())


def depth_msg(depth_m: np.ndarray, header, encoding: str = "32FC1", big_endian: bool = False):
    from sensor_msgs.msg import Image

    height, width = depth_m.shape
    if encoding == "16UC1":
        values = np.nan_to_num(depth_m * 1000.0, nan=0.0, posinf=0.0, neginf=0.0).round().astype(np.uint16)
        dtype = ">u2" if big_endian else "<u2"
    else:
        values = depth_m.astype(np.float32)
        dtype = ">f4" if big_endian else "<f4"
    data = values.astype(dtype).tobytes()
    return Image(header=header, height=height, width=width, encoding=encoding, is_bigendian=int(big_endian),
                 step=width * values.itemsize, data=data)


def camera_info_msg(camera, header):
    from sensor_msgs.msg import CameraInfo

    info = CameraInfo(header=header, width=camera.width, height=camera.height, distortion_model="plumb_bob")
    info.k = [float(v) for v in camera.matrix.reshape(-1)]
    info.p = [camera.fx, 0.0, camera.cx, 0.0, 0.0, camera.fy, camera.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.d = [0.0] * 5
    return info


def mask_from_msg(instance, width: int, height: int) -> np.ndarray:
    """Full-size bool mask of an InstanceMask (paste the crop at its roi)."""
    full = np.zeros((height, width), dtype=bool)
    roi = instance.roi
    crop = np.frombuffer(bytes(instance.mask.data), dtype=np.uint8).reshape(instance.mask.height, instance.mask.step)
    crop = crop[:, : instance.mask.width] > 0
    full[roi.y_offset: roi.y_offset + roi.height, roi.x_offset: roi.x_offset + roi.width] = crop
    return full


def stages(message) -> dict[str, float]:
    return {timing.stage: timing.milliseconds for timing in message.timings}


def diagnostic_values(array) -> dict[str, str]:
    values = {}
    for status in array.status:
        for pair in status.values:
            values[pair.key] = pair.value
    return values


def scene_frames(driver: Driver, scene, first_sec: int, depth_encoding: str | None = "32FC1",
                 encoding: str = "rgb8", depth_array: np.ndarray | None = None,
                 frame_id: str = "camera_color_optical_frame") -> Callable[[int], list]:
    """frames(i) for publish_frames_until: camera_info, depth (optional) and image stamped first_sec + i."""
    depth = scene.depth if depth_array is None else depth_array

    def frames(index: int) -> list:
        header = stamp_header(first_sec + index, 0, frame_id)
        messages = []
        if depth_encoding is not None:
            messages.append((driver.info_pub, camera_info_msg(scene.camera, header)))
            messages.append((driver.depth_pub, depth_msg(depth, header, depth_encoding)))
        messages.append((driver.image_pub, image_msg(scene.image, header, encoding)))
        return messages

    return frames


def wait_for_node_inputs(driver: Driver, publishers: list, timeout: float = 30.0) -> None:
    for publisher in publishers:
        assert driver.wait_for_subscriber(publisher, timeout), f"the node never subscribed to {publisher.topic_name}"


def warm_up_depth(driver: Driver, frames: Callable[[int], list], timeout: float = 30.0, start: int = -400) -> None:
    """Publish frames until the node reports depth images received, so the next frames carry depth.

    Warm-up frames are stamped before frames(0) (a camera's stamps only grow).

    Right after (re)connecting, the first large reliable samples can be overwritten in a keep-last
    writer before they are delivered; a command sent after this has a depth image for its frame.
    """
    reports = len(driver.diagnostics)  # counters from a report sent after this call, not a stale one
    driver.wait_for(lambda: len(driver.diagnostics) >= reports + 2, 5)
    before = driver.latest_values()
    depth_before = int(before.get("depth_received", 0))
    info_before = int(before.get("camera_info_received", 0))

    def depth_flows():  # counters are cumulative and /diagnostics comes once a second: compare
        values = driver.latest_values()
        return (int(values.get("depth_received", 0)) >= depth_before + 3
                and int(values.get("camera_info_received", 0)) >= info_before + 3)

    assert driver.publish_frames_until(frames, depth_flows, timeout, period=0.1, start=start), \
        "the node reported no depth / camera_info messages"
