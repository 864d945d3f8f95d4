"""QoS of the node's topics, and sensor subscriptions whose reliability follows their publishers.

Why: a reliable subscription never matches a best-effort publisher ("it launches but nothing
comes out"), and a best-effort subscription to a reliable publisher turns the connection
best-effort, which loses large images over Fast DDS (see README, "Camera transport"). So in
``auto`` mode an input subscription is best-effort only when some publisher on the topic is
best-effort, and reliable otherwise; ``AdaptiveSubscription`` re-checks the publishers
periodically and recreates the subscription when the answer changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

try:  # Iron and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

RELIABILITY_NAMES = {
    ReliabilityPolicy.RELIABLE: "reliable",
    ReliabilityPolicy.BEST_EFFORT: "best_effort",
}

# Results must not be dropped; a short queue absorbs bursts (one result per command or frame).
RESULT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)
# Overlay and markers are for people: newest only. Reliable publishers also serve best-effort subscribers.
VISUALISATION_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                               durability=DurabilityPolicy.VOLATILE)
MARKER_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)
# Commands and clicks must not be dropped.
COMMAND_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)


def reliability_name(policy: ReliabilityPolicy) -> str:
    return RELIABILITY_NAMES.get(policy, str(policy).lower())


def choose_reliability(
    setting: str,
    publisher_reliabilities: Iterable[ReliabilityPolicy],
    current: ReliabilityPolicy | None = None,
) -> ReliabilityPolicy:
    """The reliability an input subscription should use.

    Args:
        setting: "reliable", "best_effort" (forced) or "auto".
        publisher_reliabilities: reliability of every publisher now on the topic.
        current: what the subscription uses now; kept in auto mode while there is no publisher.

    auto: best-effort if any publisher is best-effort (a reliable subscription would not match
    it); reliable if all publishers are reliable (a reliable connection keeps large images
    intact); with no publisher, keep ``current`` (reliable at start).
    """
    if setting == "reliable":
        return ReliabilityPolicy.RELIABLE
    if setting == "best_effort":
        return ReliabilityPolicy.BEST_EFFORT
    if setting != "auto":
        raise ValueError(f"reliability setting must be auto, reliable or best_effort; got {setting!r}")
    policies = list(publisher_reliabilities)
    if any(policy == ReliabilityPolicy.BEST_EFFORT for policy in policies):
        return ReliabilityPolicy.BEST_EFFORT
    if policies:
        return ReliabilityPolicy.RELIABLE
    return current if current is not None else ReliabilityPolicy.RELIABLE


def sensor_qos(reliability: ReliabilityPolicy, depth: int) -> QoSProfile:
    """Keep-last ``depth`` volatile QoS with the given reliability (depth 1 for images: newest frame wins)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability,
                      durability=DurabilityPolicy.VOLATILE)


class AdaptiveSubscription:
    """A subscription whose reliability is matched to the topic's publishers (see module docstring).

    Call ``check()`` periodically (the node does it from a timer); it returns a log line when the
    subscription was recreated, else None. A publisher with incompatible QoS sets
    ``recheck_requested`` (instead of rmw's generic warning), so the node can re-match at once.
    """

    def __init__(self, node, msg_type, topic: str, callback: Callable, depth: int, setting: str,
                 callback_group=None) -> None:
        self._node = node
        self._msg_type = msg_type
        self.topic = node.resolve_topic_name(topic)
        self._callback = callback
        self._depth = depth
        self.setting = setting
        self._callback_group = callback_group
        self._subscription = None
        self.recheck_requested = False
        self.reliability = choose_reliability(setting, self.publisher_reliabilities())
        self._create()

    def publisher_reliabilities(self) -> list[ReliabilityPolicy]:
        return [info.qos_profile.reliability for info in self._node.get_publishers_info_by_topic(self.topic)]

    def _create(self) -> None:
        if self._subscription is not None:
            self._node.destroy_subscription(self._subscription)
        self._subscription = self._node.create_subscription(
            self._msg_type, self.topic, self._callback, sensor_qos(self.reliability, self._depth),
            callback_group=self._callback_group,
            event_callbacks=SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos))

    def _on_incompatible_qos(self, _event) -> None:
        if self.setting == "auto":
            self.recheck_requested = True

    def check(self) -> str | None:
        self.recheck_requested = False
        publishers = self.publisher_reliabilities()
        wanted = choose_reliability(self.setting, publishers, self.reliability)
        if wanted == self.reliability:
            return None
        before = self.reliability
        self.reliability = wanted
        self._create()
        summary = describe_publishers(publishers)
        return (f"{self.topic}: publishers are {summary}; subscription switched from "
                f"{reliability_name(before)} to {reliability_name(wanted)}")

    @property
    def reliability_name(self) -> str:
        return reliability_name(self.reliability)

    def describe(self) -> str:
        mode = "auto: matched to publishers" if self.setting == "auto" else "forced"
        return f"{self.topic} [{self._msg_type.__name__}, {reliability_name(self.reliability)} ({mode}), depth {self._depth}]"

    def destroy(self) -> None:
        if self._subscription is not None:
            self._node.destroy_subscription(self._subscription)
            self._subscription = None


def describe_publishers(reliabilities: Iterable[ReliabilityPolicy]) -> str:
    policies = list(reliabilities)
    if not policies:
        return "none"
    reliable = sum(policy == ReliabilityPolicy.RELIABLE for policy in policies)
    best_effort = sum(policy == ReliabilityPolicy.BEST_EFFORT for policy in policies)
    return f"{reliable} reliable, {best_effort} best-effort"


def no_image_warning(subscription: AdaptiveSubscription, seconds: float) -> str:
    """The warning for ``seconds`` without an image on ``subscription``: its publishers, its QoS, what to check."""
    publishers = subscription.publisher_reliabilities()
    hint = ("no publisher: check the topic name / remapping (launch argument image_topic)" if not publishers else
            "publishers exist but nothing arrives: large images over best-effort Fast DDS need the shared-memory "
            "profile config/fastdds_large_images.xml on the publisher (README, 'Camera transport')")
    return (f"No image received on {subscription.topic} for {seconds:.1f} s. Publishers: "
            f"{describe_publishers(publishers)}; this subscription is {reliability_name(subscription.reliability)}"
            f" ({subscription.setting}). Hint: {hint}.")
