"""Conversions between the teleop's plain values and ROS messages (message packages only, no rclpy)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from armstack_interfaces.msg import EndEffectorCommand
from armstack_interfaces.msg import EpisodeStatus as EpisodeStatusMsg
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose
from sensor_msgs.msg import JointState
from std_msgs.msg import Header

from armstack_common.timeutil import sec_to_stamp_fields, stamp_to_sec
from armstack_common.transforms import matrix_to_quat_xyzw, pose_matrix
from armstack_teleop.episode import EpisodeStatus

if TYPE_CHECKING:
    from armstack_sim.world import ObjectPose
    from vision_msgs.msg import Detection3DArray


def time_msg(t: float | None) -> Time:
    """Float seconds as a Time; None as the zero time."""
    if t is None:
        return Time()
    sec, nanosec = sec_to_stamp_fields(t)
    return Time(sec=sec, nanosec=nanosec)


def pose_msg(pose: np.ndarray) -> Pose:
    """(4, 4) -> geometry_msgs/Pose"""
    msg = Pose()
    msg.position.x, msg.position.y, msg.position.z = (float(v) for v in pose[:3, 3])
    o = msg.orientation
    o.x, o.y, o.z, o.w = (float(v) for v in matrix_to_quat_xyzw(pose[:3, :3]))
    return msg


def pose_from_msg(msg: Pose) -> np.ndarray:
    """geometry_msgs/Pose -> (4, 4)"""
    p, o = msg.position, msg.orientation
    return pose_matrix(np.array([p.x, p.y, p.z]), np.array([o.x, o.y, o.z, o.w]))


def ee_command_msg(pose: np.ndarray, gripper: float, stamp: Time, frame_id: str) -> EndEffectorCommand:
    """`stamp` is a Time message so an observation's stamp is carried forward exactly."""
    msg = EndEffectorCommand(pose=pose_msg(pose), gripper=float(gripper))
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg


def joint_command_msg(names: Sequence[str], positions: np.ndarray, stamp: Time) -> JointState:
    msg = JointState(name=list(names), position=[float(v) for v in positions])
    msg.header.stamp = stamp
    return msg


def joint_positions(msg: JointState) -> dict[str, float]:
    return {name: float(p) for name, p in zip(msg.name, msg.position, strict=False)}


def status_msg(status: EpisodeStatus) -> EpisodeStatusMsg:
    msg = EpisodeStatusMsg(
        state=status.state.value,
        task=status.task,
        source=status.source,
        episode_index=status.episode_index,
        take=status.take,
        outcome=status.outcome.value,
        take_start=time_msg(status.take_start),
        take_end=time_msg(status.take_end),
        saved=status.saved,
        discarded=status.discarded,
        target_episodes=status.target_episodes,
        summary=status.summary,
    )
    msg.header.stamp = time_msg(status.since)
    return msg


def objects_from_detections(msg: Detection3DArray) -> dict[str, ObjectPose]:
    """vision_msgs/Detection3DArray (the simulator's ground truth) -> name -> ObjectPose.

    Each detection's id is the object's name (e.g. red_cube), its first hypothesis holds the
    pose in the array's frame and the bbox its edge length.
    """
    # Imported here: ObjectPose lives in the simulator package (only the expert needs it).
    from armstack_sim.world import ObjectPose

    objects = {}
    for det in msg.detections:
        if not det.results:
            continue
        pose = det.results[0].pose.pose
        name = det.id or det.results[0].hypothesis.class_id
        p, o = pose.position, pose.orientation
        objects[name] = ObjectPose(
            name=name,
            color=name.removesuffix("_cube"),
            position=np.array([p.x, p.y, p.z]),
            quat_xyzw=np.array([o.x, o.y, o.z, o.w]),
            size=float(det.bbox.size.x),
        )
    return objects


def stamp_seconds(header: Header) -> float:
    return stamp_to_sec(header.stamp)
