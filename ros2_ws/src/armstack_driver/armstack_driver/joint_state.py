"""joint_states layout: the driven joints plus the URDF mimic joints that follow them.

The gripper has one servo for two fingers: right_finger is a <mimic> of left_finger in the URDF,
so joint_states carries it too (robot_state_publisher and the IK need every non-fixed joint).

Plain module: no rclpy.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class MimicJoint:
    name: str
    source: str
    multiplier: float
    offset: float


def urdf_mimic_joints(urdf: str | Path) -> list[MimicJoint]:
    """Every <mimic> joint of the URDF, in file order."""
    mimics = []
    for joint in ET.parse(urdf).getroot().iter("joint"):
        mimic = joint.find("mimic")
        if mimic is not None:
            mimics.append(MimicJoint(joint.attrib["name"], mimic.attrib["joint"],
                                     float(mimic.attrib.get("multiplier", 1.0)),
                                     float(mimic.attrib.get("offset", 0.0))))
    return mimics


class JointStateLayout:
    """Expands (J,) driven-joint arrays to the (J + M,) arrays of joint_states."""

    def __init__(self, driven: list[str], mimics: list[MimicJoint]) -> None:
        usable = [m for m in mimics if m.source in driven and m.name not in driven]
        self.names = list(driven) + [m.name for m in usable]
        self.mimic_names = [m.name for m in usable]
        source_index = [driven.index(m.source) for m in usable]
        # (J + M,) gather index into the driven arrays, and per-row scale and offset.
        self._gather = np.array(list(range(len(driven))) + source_index, dtype=np.int64)
        self._scale = np.array([1.0] * len(driven) + [m.multiplier for m in usable])
        self._offset = np.array([0.0] * len(driven) + [m.offset for m in usable])

    def positions(self, driven: np.ndarray) -> np.ndarray:
        return driven[self._gather] * self._scale + self._offset

    def rates(self, driven: np.ndarray) -> np.ndarray:
        """Velocities or efforts: scaled, not offset."""
        return driven[self._gather] * self._scale
