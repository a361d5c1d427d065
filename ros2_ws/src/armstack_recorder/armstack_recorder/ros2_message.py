"""ROS 2 messages as rosbag2 stores them, for the MCAP bag tools (no node).

- `message_definition`: the complete "ros2msg" schema text of a type, built as rosbag2's
  LocalMessageDefinitionSource builds it (Jazzy): the .msg file, then each dependency once,
  depth first in sorted order, after a line of 80 "=" and "MSG: pkg/Type".
- `type_hash`: the RIHS01 hash rosidl generated for the type (share/<pkg>/msg/<Type>.json).
- `serialize`: rclpy's CDR bytes, trimmed to the message with alignment padding zeroed (see its
  doc), and `deserialize` by type name.
The .msg files are found through the ament index (AMENT_PREFIX_PATH).
"""

from __future__ import annotations

import importlib
import json
import re
from functools import cache
from pathlib import Path
from typing import Any


class MessageTypeError(ValueError):
    """A message type cannot be found, described or laid out."""


# The dependency scan of rosbag2's LocalMessageDefinitionSource: the type at the start of each
# line (comment lines start with "#" and never match), primitives excluded.
_FIELD_TYPE = re.compile(r"(?:^|\n)\s*([a-zA-Z0-9_/]+)(?:\[[^\]]*\])?\s+")
_TYPE_NAME = re.compile(r"^([a-zA-Z0-9_]+)/(?:msg/)?([a-zA-Z0-9_]+)$")
_PRIMITIVES = frozenset({"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16",
                         "uint16", "int32", "uint32", "int64", "uint64", "string"})
_DELIMITER = "=" * 80 + "\n"


def _split_type(type_name: str) -> tuple[str, str]:
    match = _TYPE_NAME.match(type_name)
    if not match:
        raise MessageTypeError(f"not a message type name: {type_name!r} "
                               "(expected pkg/msg/Type)")
    return match.group(1), match.group(2)


def _share_file(type_name: str, suffix: str) -> Path:
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    package, name = _split_type(type_name)
    try:
        share = Path(get_package_share_directory(package))
    except PackageNotFoundError:
        raise MessageTypeError(f"package {package} of {type_name} is not on "
                               "AMENT_PREFIX_PATH (source the armstack environment)") from None
    return share / "msg" / f"{name}{suffix}"


@cache
def _msg_text(type_name: str) -> str:
    path = _share_file(type_name, ".msg")
    if not path.is_file():
        raise MessageTypeError(f"no .msg definition of {type_name} at {path}")
    return path.read_text()


def _dependencies(text: str, package: str) -> list[str]:
    deps = set()
    for match in _FIELD_TYPE.finditer(text):
        name = match.group(1)
        if name not in _PRIMITIVES:
            deps.add(name if "/" in name else f"{package}/{name}")
    return sorted(deps)


@cache
def message_definition(type_name: str) -> str:
    """The complete ros2msg definition of `type_name`, as rosbag2 stores it in a schema."""
    seen: set[str] = set()

    def append(name: str, depth: int) -> str:
        if depth <= 0:
            raise MessageTypeError(f"message definition of {type_name} nests too deep")
        text = _msg_text(name)
        out = text
        for dep in _dependencies(text, _split_type(name)[0]):
            if dep not in seen:
                seen.add(dep)
                out += "\n" + _DELIMITER + f"MSG: {dep}\n" + append(dep, depth - 1)
        return out

    return append(type_name, 50)


@cache
def type_hash(type_name: str) -> str:
    """RIHS01 type hash from the package's type description (rosidl), "" when unavailable."""
    path = _share_file(type_name, ".json")
    if not path.is_file():
        return ""
    for entry in json.loads(path.read_text()).get("type_hashes", []):
        if entry.get("type_name") == type_name:
            return str(entry.get("hash_string", ""))
    return ""


@cache
def message_class(type_name: str) -> type:
    package, name = _split_type(type_name)
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError):
        raise MessageTypeError(f"message type {type_name} is not importable here") from None


# XCDR1 sizes of rosidl basic types (long double is not used by ROS messages; refused below)
_CDR_SIZE = {"boolean": 1, "octet": 1, "char": 1, "int8": 1, "uint8": 1, "wchar": 2, "short": 2,
             "unsigned short": 2, "int16": 2, "uint16": 2, "long": 4, "unsigned long": 4,
             "int32": 4, "uint32": 4, "float": 4, "long long": 8, "unsigned long long": 8,
             "int64": 8, "uint64": 8, "double": 8}


class _CdrLayout:
    """Byte layout of a message in plain CDR (XCDR1, what ROS 2 uses): its exact size and where
    alignment padding goes. Offsets count from the end of the 4-byte encapsulation header."""

    def __init__(self) -> None:
        self.size = 0
        self.padding: list[tuple[int, int]] = []  # (offset, bytes)

    def _align(self, n: int) -> None:
        pad = -self.size % n
        if pad:
            self.padding.append((self.size, pad))
            self.size += pad

    def message(self, msg: Any) -> _CdrLayout:
        for name, kind in zip(msg.get_fields_and_field_types(), msg.SLOT_TYPES, strict=True):
            self._value(getattr(msg, name), kind)
        return self

    def _value(self, value: Any, kind: Any) -> None:
        from rosidl_parser import definition as d
        if isinstance(kind, d.BasicType):
            self._primitives(kind.typename, 1)
        elif isinstance(kind, d.AbstractString):
            self._align(4)
            self.size += 4 + len(value.encode()) + 1  # length, UTF-8 bytes, NUL
        elif isinstance(kind, d.NamespacedType):
            self.message(value)
        elif isinstance(kind, (d.Array, d.AbstractSequence)):
            if isinstance(kind, d.AbstractSequence):
                self._align(4)
                self.size += 4  # element count
            if isinstance(kind.value_type, d.BasicType):
                self._primitives(kind.value_type.typename, len(value))
            else:
                for item in value:
                    self._value(item, kind.value_type)
        else:
            raise MessageTypeError(f"no CDR layout for {type(kind).__name__} fields")

    def _primitives(self, typename: str, count: int) -> None:
        if typename not in _CDR_SIZE:
            raise MessageTypeError(f"no CDR layout for {typename} fields")
        if count:  # an empty sequence has no element alignment
            self._align(_CDR_SIZE[typename])
            self.size += _CDR_SIZE[typename] * count


def serialize(msg: Any) -> bytes:
    """rclpy's CDR bytes of msg, trimmed to the message and with zeroed padding.

    rmw_serialize (Fast DDS, Jazzy) reports the buffer's estimated size, which can exceed the
    message (e.g. 8 bytes after a JointState with empty velocity/effort), and leaves alignment
    padding as it found the memory; strict readers (rosbags) refuse the trailing bytes, and the
    padding would make the same dataset give different bags."""
    from rclpy.serialization import serialize_message
    data = bytearray(serialize_message(msg))
    cdr = _CdrLayout().message(msg)
    end = 4 + cdr.size
    if len(data) < end:
        raise MessageTypeError(f"{type(msg).__name__}: rclpy wrote {len(data)} bytes, the CDR "
                               f"layout needs {end}")
    for offset, count in cdr.padding:
        data[4 + offset:4 + offset + count] = bytes(count)
    return bytes(data[:end])


def deserialize(data: bytes, type_name: str) -> Any:
    from rclpy.serialization import deserialize_message
    return deserialize_message(data, message_class(type_name))
