"""Messages between ``rosbags`` and rclpy's message classes, field by field, without serialising.

A bag read with ``rosbags`` yields its own dataclasses (same field names, primitive arrays as
numpy arrays); the node's code (``conversions``, the frame pipeline, ``markers``) builds and takes
the message classes of the ROS Python packages (``sensor_msgs.msg.Image``: primitive sequences as
``array.array``, fixed arrays as numpy arrays). ``to_ros`` and ``to_rosbags`` convert at the
boundary, so the replay runs exactly the node's code on bag data and ``rosbags`` serialises the
results with the definitions it embeds (``bag_types``). Both walk the ``rosbags`` definition of
the type; uint8 data (images, clouds) is copied once, as bytes.

Errors: ``ValueError`` naming the type and field when a message does not fit its definition
(e.g. a bag written with another definition of a type than the installed one).
"""

from __future__ import annotations

import array
import functools
import importlib

import numpy as np
from rosbags.interfaces import Nodetype
from rosbags.typesys.store import Typestore

from .bag_types import typename_of

# rosbags base type -> numpy dtype of its arrays (strings are lists, bool arrays numpy bool).
NUMPY_TYPES = {
    "bool": np.bool_, "byte": np.uint8, "char": np.uint8, "int8": np.int8, "uint8": np.uint8,
    "int16": np.int16, "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32, "int64": np.int64,
    "uint64": np.uint64, "float32": np.float32, "float64": np.float64,
}


@functools.lru_cache(maxsize=None)
def ros_class(typename: str) -> type:
    """The rclpy message class of ``typename`` ("sensor_msgs/msg/Image" -> sensor_msgs.msg.Image)."""
    package, kind, name = typename.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"no Python message class for {typename} ({error}); source the ROS 2 setup or run "
                         "`make setup` (and build xsam_ros's messages)") from error


@functools.lru_cache(maxsize=None)
def _ros_defaults(typename: str) -> dict:
    """Field name -> the default value of an rclpy message of ``typename`` (its container kinds)."""
    message = ros_class(typename)()
    return {name: getattr(message, name) for name in message.get_fields_and_field_types()}


def _fields(store: Typestore, typename: str) -> list:
    try:
        return store.fielddefs[typename][1]
    except KeyError:
        raise ValueError(f"{typename} is not in the typestore (bag_types.REPLAY_TYPES lists what the replay "
                         "reads and writes)") from None


def to_ros(message, store: Typestore):
    """rosbags message -> the rclpy message of the same type, with the same values."""
    typename = typename_of(message)
    defaults = _ros_defaults(typename)
    result = ros_class(typename)()
    for name, (kind, desc) in _fields(store, typename):
        value = getattr(message, name)
        if kind == Nodetype.NAME:
            value = to_ros(value, store)
        elif kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
            item_kind, item_desc = desc[0]
            default = defaults[name]
            if item_kind == Nodetype.NAME:
                value = [to_ros(item, store) for item in value]
            elif isinstance(default, array.array):  # rclpy's primitive sequences
                value = array.array(default.typecode, np.ascontiguousarray(value, dtype=default.typecode).tobytes())
            elif isinstance(default, np.ndarray):  # rclpy's fixed-size primitive arrays
                value = np.asarray(value, dtype=default.dtype)
            else:  # strings, bools, bytes: lists
                value = list(value)
        try:
            setattr(result, name, value)
        except (AssertionError, TypeError, ValueError) as error:
            raise ValueError(f"{typename}.{name}: the bag's value does not fit the installed message definition "
                             f"({error or type(error).__name__})") from error
    return result


def to_rosbags(message, store: Typestore):
    """rclpy message -> the rosbags message of the same type (``store`` must hold its definition)."""
    typename = typename_of(message)
    values = {}
    for name, (kind, desc) in _fields(store, typename):
        try:
            value = getattr(message, name)
        except AttributeError:
            raise ValueError(f"{typename} has no field {name!r} here although the typestore's definition has it: "
                             "the installed message package differs from the definition being written") from None
        if kind == Nodetype.NAME:
            value = to_rosbags(value, store)
        elif kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
            item_kind, item_desc = desc[0]
            if item_kind == Nodetype.NAME:
                value = [to_rosbags(item, store) for item in value]
            elif item_desc[0] == "string":
                value = list(value)
            else:
                dtype = np.dtype(NUMPY_TYPES[item_desc[0]])
                buffer_itemsize = value.itemsize if isinstance(value, array.array) else (
                    1 if isinstance(value, (bytes, bytearray)) else 0)
                if buffer_itemsize == dtype.itemsize:
                    value = np.frombuffer(value, dtype=dtype)  # a view of rclpy's buffer, no copy
                else:
                    value = np.asarray(value, dtype=dtype)
        values[name] = value
    return store.types[typename](**values)
