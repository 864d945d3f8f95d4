"""Reading recorded bags and writing the replay's MCAP output, without ROS.

Input (``BagInput``): a rosbag2 bag (a directory with ``metadata.yaml``, sqlite3 or mcap storage),
or one storage file (``.mcap``, ``.db3``), read with ``rosbags``' ``AnyReader`` in log-time order
(bag order). Messages are deserialised with the definitions the bag embeds (rosbag2 >= Iron),
else with ``bag_types.bag_typestore()`` (a Humble bag embeds none), and handed out as the ROS
Python message classes the node's code takes (``bag_messages.to_ros``). What goes wrong is said,
never skipped in silence:

- a path that is not a bag, or a topic the bag lacks or holds with another type:
  ``BagError`` naming what the bag holds (``describe``);
- one message that does not deserialise: a ``BagRecord`` with ``error`` set (the caller reports
  it and goes on);
- an MCAP file cut short (recording interrupted, disk full; ``rosbags`` refuses it): read in file
  order with ``mcap``'s streaming reader up to the damage, and ``warnings`` says so; the
  messages after the cut are lost (the ``mcap recover`` CLI does the same);
- reading that fails half-way (e.g. a damaged sqlite3 page): ``records`` stops and
  ``stopped_early`` says after how many messages and why.

Output (``McapOutput``): one ``.mcap`` file, ROS 2 profile, each schema the ``ros2msg``
definition of its type from ``bag_types`` (our messages included), each message CDR serialised by
``rosbags``: Foxglove, ``ros2 bag info/play``, ``rosbags`` and ``mcap-ros2-support`` read it.
``close`` writes the summary and index; it is safe to call twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .bag_messages import to_ros, to_rosbags
from .bag_types import bag_typestore, definitions, typename_of
from .interrupts import interrupts_deferred


class BagError(RuntimeError):
    """The bag cannot be read as asked; the message says what the bag holds and what to change."""


@dataclasses.dataclass(frozen=True)
class TopicSummary:
    """One topic of a bag: its type ("sensor_msgs/msg/Image") and number of messages."""

    topic: str
    msgtype: str
    count: int


@dataclasses.dataclass(frozen=True, eq=False)
class BagRecord:
    """One message of the bag, in bag order.

    Attributes:
        topic, msgtype: where it was recorded and its type.
        log_time_ns: when it was recorded (the bag's timestamp, ns).
        message: the ROS Python message (e.g. ``sensor_msgs.msg.Image``); None when ``error``.
        error: why the message could not be read ("" = fine).
    """

    topic: str
    msgtype: str
    log_time_ns: int
    message: Any = None
    error: str = ""


def _mcap_file(path: Path) -> Path | None:
    """The MCAP file of a path (the file itself, or the one .mcap of a rosbag2 directory), else None."""
    if path.is_file():
        return path if path.suffix == ".mcap" else None
    files = sorted(path.glob("*.mcap"))
    return files[0] if len(files) == 1 else None


class BagInput:
    """A bag opened for reading (see the module docstring); use as a context manager.

    Raises:
        BagError: the path does not exist or holds no readable bag.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.warnings: list[str] = []
        self.stopped_early = ""
        self._reader = None
        self._salvage: _McapStream | None = None
        if not self.path.exists():
            raise BagError(f"{self.path}: no such file or directory; give a rosbag2 bag directory (with "
                           "metadata.yaml), an .mcap file or a .db3 file")
        from rosbags.highlevel import AnyReader, AnyReaderError

        try:
            self._reader = AnyReader([self.path], default_typestore=bag_typestore())
            self._reader.open()
        except (AnyReaderError, OSError, ValueError, KeyError) as error:
            self._reader = None
            mcap = _mcap_file(self.path)
            if mcap is None:
                raise BagError(_open_error(self.path, error)) from error
            self._salvage = _McapStream(mcap)
            self.warnings.append(
                f"{mcap} is damaged ({error}): it was probably cut short (recording interrupted, disk full); "
                f"reading the {self._salvage.readable} message(s) before the damage in file order, the rest is lost")
        self.topics: dict[str, TopicSummary] = self._topics()

    def _topics(self) -> dict[str, TopicSummary]:
        if self._salvage is not None:
            return self._salvage.topics
        return {name: TopicSummary(name, info.msgtype or "(several types)", info.msgcount)
                for name, info in sorted(self._reader.topics.items())}

    def describe(self) -> str:
        """What the bag holds, one topic per line: "  /camera/color/image_raw  sensor_msgs/msg/Image  (30 messages)"."""
        if not self.topics:
            return "  (no topics)"
        width = max(len(name) for name in self.topics)
        return "\n".join(f"  {summary.topic:<{width}}  {summary.msgtype}  ({summary.count} messages)"
                         for summary in self.topics.values())

    def require(self, topic: str, types: Sequence[str], option: str) -> TopicSummary:
        """The topic's summary; BagError when the bag lacks it or holds it with a type not in ``types``."""
        summary = self.topics.get(topic)
        if summary is None:
            siblings = [name for name in (topic + "/compressed", topic.removesuffix("/compressed")) if name in self.topics]
            similar = siblings + [name for name in self.topics
                                  if name.rsplit("/", 1)[-1] == topic.rsplit("/", 1)[-1] and name not in siblings]
            hint = f" (did you mean {' or '.join(similar)}?)" if similar else ""
            raise BagError(f"{option} {topic}: the bag has no such topic{hint}. {self.path} holds:\n{self.describe()}")
        if summary.msgtype not in types:
            raise BagError(f"{option} {topic}: the topic holds {summary.msgtype}, expected "
                           f"{' or '.join(types)}. {self.path} holds:\n{self.describe()}")
        return summary

    def records(self, topics: Sequence[str]) -> Iterator[BagRecord]:
        """The messages of ``topics`` in bag order (log time; file order for a damaged MCAP)."""
        wanted = set(topics)
        count = 0
        try:
            for topic, msgtype, log_time, raw, store in self._raw(wanted):
                count += 1
                try:
                    message = to_ros(store.deserialize_cdr(raw, msgtype), store)
                except Exception as error:  # rosbags raises several types for bad CDR; each is this message's fault
                    yield BagRecord(topic, msgtype, log_time, error=f"cannot deserialise the {msgtype} recorded at "
                                    f"{log_time} ns: {type(error).__name__}: {error}")
                    continue
                yield BagRecord(topic, msgtype, log_time, message)
        except Exception as error:  # damage found while reading: keep what was read, say where it stopped
            self.stopped_early = (f"reading {self.path} stopped after {count} message(s): {type(error).__name__}: "
                                  f"{error}; the rest of the bag could not be read")

    def _raw(self, topics: set[str]):
        """(topic, msgtype, log_time, raw CDR, typestore) of the wanted topics, in bag order."""
        if self._salvage is not None:
            yield from self._salvage.messages(topics)
            return
        reader = self._reader
        connections = [connection for connection in reader.connections if connection.topic in topics]
        if not connections:
            return
        for connection, log_time, raw in reader.messages(connections=connections):
            yield connection.topic, connection.msgtype, log_time, raw, reader.typestore

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> BagInput:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _open_error(path: Path, error: Exception) -> str:
    text = f"{path} cannot be read as a bag: {error}"
    if "malformed" in str(error) or "not a database" in str(error):
        text += ("; the sqlite3 file is damaged (probably cut short while recording) and cannot be salvaged here; "
                 "try `sqlite3 <file>.db3 .recover` and replay the recovered database")
    elif path.is_file() and path.suffix not in (".mcap", ".db3"):
        text += "; give a rosbag2 bag directory (with metadata.yaml), an .mcap file or a .db3 file"
    return text


class _McapStream:
    """An MCAP file read record by record (``mcap``'s non-seeking reader), up to where it is damaged."""

    def __init__(self, path: Path) -> None:
        self.path = path
        counts: dict[str, list] = {}
        self.readable = 0
        for topic, msgtype, _, _, _ in self._stream():
            counts.setdefault(topic, [msgtype, 0])[1] += 1
            self.readable += 1
        self.topics = {topic: TopicSummary(topic, msgtype, count) for topic, (msgtype, count) in sorted(counts.items())}

    def _stream(self, topics: set[str] | None = None):
        from mcap.exceptions import McapError
        from mcap.reader import NonSeekingReader
        from rosbags.typesys import get_types_from_msg, get_typestore
        from rosbags.typesys.stores import Stores

        store = get_typestore(Stores.EMPTY)
        registered: set[int] = set()
        with open(self.path, "rb") as stream:
            reader = NonSeekingReader(stream, validate_crcs=True)
            try:
                for schema, channel, message in reader.iter_messages(topics=topics, log_time_order=False):
                    if schema is None or channel.message_encoding != "cdr":
                        continue
                    if schema.id not in registered:  # the file's definition, else the installed one
                        types = get_types_from_msg(schema.data.decode(), schema.name) if schema.data else \
                            definitions([schema.name])
                        store.register({name: fields for name, fields in types.items() if name not in store.fielddefs})
                        registered.add(schema.id)
                    yield channel.topic, schema.name, message.log_time, message.data, store
            except (McapError, EOFError, OSError):
                return  # the damage: everything before it was yielded

    def messages(self, topics: set[str]):
        yield from self._stream(topics)


class McapOutput:
    """An .mcap file being written (see the module docstring).

    Raises:
        BagError: the file cannot be created.
    """

    def __init__(self, path: str | Path, library: str = "xsam_ros replay") -> None:
        from mcap.writer import CompressionType, Writer

        self.path = Path(path)
        self._store = bag_typestore()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "wb")
        except OSError as error:
            raise BagError(f"cannot create the output {self.path}: {error}") from error
        self._writer = Writer(self._file, compression=CompressionType.ZSTD)
        self._writer.start(profile="ros2", library=library)
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.closed = False

    def write(self, topic: str, message, log_time_ns: int) -> None:
        """Append one ROS Python message (its type must be in ``bag_types.REPLAY_TYPES``' closure)."""
        typename = typename_of(message)
        channel = self._channels.get(topic)
        if channel is None:
            if typename not in self._schemas:
                definition, _ = self._store.generate_msgdef(typename, ros_version=2)
                self._schemas[typename] = self._writer.register_schema(typename, "ros2msg", definition.encode())
            channel = self._writer.register_channel(topic, "cdr", self._schemas[typename])
            self._channels[topic] = channel
        data = self._store.serialize_cdr(to_rosbags(message, self._store), typename)
        self._writer.add_message(channel, log_time=int(log_time_ns), data=bytes(data), publish_time=int(log_time_ns),
                                 sequence=self.counts.get(topic, 0))
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def close(self) -> None:
        """Write the summary and close the file (idempotent; Ctrl-C / SIGTERM meanwhile is acted on after)."""
        if self.closed:
            return
        self.closed = True
        with interrupts_deferred():
            try:
                self._writer.finish()
            finally:
                self._file.close()

    def __enter__(self) -> McapOutput:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
