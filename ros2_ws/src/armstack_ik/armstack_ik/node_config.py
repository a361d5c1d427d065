"""Parameters of the ik node and the state publisher: declared once here, validated
through their config dataclasses (no ROS; the node files hand these to NodeParameters)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from armstack_common.kinematics import IKConfig
from armstack_common.params import ParamSpec

from .controller import ControllerConfig
from .ik_stats import SolveLimits

PUBLISH_MODES = ("per_command", "timer")

_ARM = "waist, shoulder, elbow, forearm_roll, wrist_angle, wrist_rotate"

IK_NODE_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "urdf_path", "", "robot description to load; empty: armstack's config/robot/arm.urdf", read_only=True
    ),
    ParamSpec("base_frame", "base_link", "frame ee_command poses must be expressed in", read_only=True),
    ParamSpec("gripper_joint", "left_finger", "joint the command's gripper value drives", read_only=True),
    ParamSpec("position_weight", 1.0, "IK weight of the position error", range=(0.0, 100.0)),
    ParamSpec(
        "orientation_weights",
        [1.0, 1.0, 1.0],
        "IK weights of the orientation error about ee_link x, y, z; 0 frees an axis "
        "([0, 1, 1] leaves the roll about the approach axis free, as a 5-DOF arm needs)",
    ),
    ParamSpec("ik_position_tolerance", 1e-4, "IK convergence tolerance on position", "m", (1e-6, 0.01)),
    ParamSpec(
        "ik_orientation_tolerance", 1e-3, "IK convergence tolerance on orientation", "rad", (1e-5, 0.1)
    ),
    ParamSpec("max_iterations", 60, "IK iterations per attempt", range=(1, 1000)),
    ParamSpec(
        "max_restarts",
        4,
        "IK attempts after the first; few suffice when tracking, and each costs time on an "
        "unreachable target",
        range=(0, 100),
    ),
    ParamSpec(
        "accept_position_tolerance",
        2e-3,
        "a solve that did not converge is still used when this close (else the last target is held)",
        "m",
        (1e-6, 0.05),
    ),
    ParamSpec(
        "accept_orientation_tolerance",
        0.02,
        "as accept_position_tolerance, for orientation",
        "rad",
        (1e-5, 0.5),
    ),
    ParamSpec(
        "velocity_scale",
        0.5,
        "fraction of the URDF joint velocity limits commands may use",
        range=(0.01, 1.0),
    ),
    ParamSpec("arm_acceleration", [8.0] * 6, f"acceleration limit per arm joint ({_ARM})", "rad/s^2"),
    ParamSpec("gripper_acceleration", 0.5, "acceleration limit of the gripper joint", "m/s^2", (0.001, 10.0)),
    ParamSpec(
        "max_command_age",
        1.0,
        "refuse commands whose stamp is older (or further in the future) than this; 0: no check",
        "s",
        (0.0, 10.0),
    ),
    ParamSpec(
        "max_step_period",
        0.05,
        "after a longer gap between commands, motion restarts from rest",
        "s",
        (0.001, 1.0),
    ),
    ParamSpec(
        "resync_after",
        1.0,
        "after this long without commands, restart from the measured joint state; 0: never",
        "s",
        (0.0, 60.0),
    ),
    ParamSpec(
        "publish_mode",
        "per_command",
        "per_command: one joint_command per ee_command; timer: step towards the latest target "
        "at timer_rate until it is reached (for sparse targets)",
        choices=PUBLISH_MODES,
        read_only=True,
    ),
    ParamSpec("timer_rate", 50.0, "joint_command rate in timer mode", "Hz", (1.0, 1000.0), read_only=True),
    ParamSpec(
        "diagnostics_period", 1.0, "period of the diagnostics status", "s", (0.1, 60.0), read_only=True
    ),
    # A solve longer than half the 20 ms control period starts eating the driver's share;
    # one longer than the period drops commands.
    ParamSpec(
        "solve_warn_ms",
        10.0,
        "diagnostics warn when the IK solve time (p99) exceeds this",
        "ms",
        (0.01, 1000.0),
    ),
    ParamSpec(
        "solve_error_ms",
        20.0,
        "diagnostics error when the IK solve time (p99) exceeds this; >= solve_warn_ms",
        "ms",
        (0.01, 1000.0),
    ),
)


@dataclass(frozen=True)
class IKNodeConfig:
    ik: IKConfig
    controller: ControllerConfig
    solve_limits: SolveLimits
    urdf_path: str = ""
    publish_mode: str = "per_command"
    timer_rate: float = 50.0  # Hz
    diagnostics_period: float = 1.0  # s

    def __post_init__(self) -> None:
        if self.publish_mode not in PUBLISH_MODES:
            raise ValueError(
                f"IKNodeConfig.publish_mode must be one of {PUBLISH_MODES}, got {self.publish_mode!r}"
            )
        for name in ("timer_rate", "diagnostics_period"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"IKNodeConfig.{name} must be > 0, got {getattr(self, name)}")


def _floats(values: dict[str, Any], name: str) -> tuple[float, ...]:
    # rclpy hands double arrays over as array.array('d').
    return tuple(float(v) for v in values[name])


def ik_node_config(values: dict[str, Any]) -> IKNodeConfig:
    """The node config from a full set of IK_NODE_PARAMS values; ValueError names the field."""
    ik = IKConfig(
        position_weight=float(values["position_weight"]),
        orientation_weights=_floats(values, "orientation_weights"),
        position_tolerance=float(values["ik_position_tolerance"]),
        orientation_tolerance=float(values["ik_orientation_tolerance"]),
        max_iterations=int(values["max_iterations"]),
        max_restarts=int(values["max_restarts"]),
    )
    controller = ControllerConfig(
        base_frame=values["base_frame"],
        gripper_joint=values["gripper_joint"],
        accept_position_tolerance=float(values["accept_position_tolerance"]),
        accept_orientation_tolerance=float(values["accept_orientation_tolerance"]),
        velocity_scale=float(values["velocity_scale"]),
        arm_acceleration=_floats(values, "arm_acceleration"),
        gripper_acceleration=float(values["gripper_acceleration"]),
        max_command_age=float(values["max_command_age"]),
        max_step_period=float(values["max_step_period"]),
        resync_after=float(values["resync_after"]),
    )
    return IKNodeConfig(
        ik=ik,
        controller=controller,
        solve_limits=SolveLimits(float(values["solve_warn_ms"]), float(values["solve_error_ms"])),
        urdf_path=values["urdf_path"],
        publish_mode=values["publish_mode"],
        timer_rate=float(values["timer_rate"]),
        diagnostics_period=float(values["diagnostics_period"]),
    )


STATE_PUBLISHER_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "urdf_path",
        "",
        "robot description to publish; empty: armstack's config/robot/arm.urdf",
        read_only=True,
    ),
    ParamSpec(
        "frame_prefix",
        "",
        "prefix of every link's tf frame name (as robot_state_publisher's)",
        read_only=True,
    ),
    ParamSpec(
        "max_publish_rate",
        0.0,
        "most tf messages per second from joint_states; 0: one per joint_states message",
        "Hz",
        (0.0, 1000.0),
    ),
)


@dataclass(frozen=True)
class StatePublisherConfig:
    urdf_path: str = ""
    frame_prefix: str = ""
    max_publish_rate: float = 0.0  # Hz; 0: every joint_states message

    def __post_init__(self) -> None:
        if not self.max_publish_rate >= 0.0:
            raise ValueError(
                f"StatePublisherConfig.max_publish_rate must be >= 0, got {self.max_publish_rate}"
            )


def state_publisher_config(values: dict[str, Any]) -> StatePublisherConfig:
    return StatePublisherConfig(
        urdf_path=values["urdf_path"],
        frame_prefix=values["frame_prefix"],
        max_publish_rate=float(values["max_publish_rate"]),
    )
