"""Parameters of the teleop node, declared once here and validated through `TeleopConfig`.

Parameters marked read_only take effect at start; the others may change live (rqt_reconfigure),
e.g. the task string of the next takes or the jog speeds. Plain module: no rclpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from armstack_common.params import ParamSpec, comma_separated

from armstack_teleop.gamepad import GamepadConfig
from armstack_teleop.jog import JogConfig
from armstack_teleop.keyboard import KeyboardConfig
from armstack_teleop.leader import LeaderConfig

if TYPE_CHECKING:
    from armstack_teleop.expert_session import ExpertSessionConfig

SOURCES = ("keyboard", "gamepad", "leader", "expert")
EE_SOURCES = ("joint_states", "sim")
# armstack_sim.expert.PICK_ORDERS and GRASP_YAWS and the Phase values a take passes through,
# restated so this module does not import the simulator (MuJoCo); test_node_config checks they
# agree.
PICK_ORDERS = ("nearest", "listed")
GRASP_YAWS = ("cube", "azimuth")
EXPERT_PHASES = ("approach", "descend", "close", "lift", "transfer", "lower", "release", "retreat",
                 "home")

TELEOP_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("source", "keyboard", "what drives the arm: keyboard and gamepad jog the end effector "
              "(ee_command), the leader arm publishes joint_command, the expert runs the simulator's "
              "scripted pick-and-place (ee_command)", choices=SOURCES, read_only=True),
    ParamSpec("rate", 50.0, "command publishing and device polling rate", "Hz", (1.0, 500.0), read_only=True),
    ParamSpec("task", "put the cubes in the bin", "task string of the takes (stored by recorders)"),
    ParamSpec("num_episodes", 0, "takes to save before the session ends by itself; 0: until told to end",
              range=(0, 1_000_000), read_only=True),
    ParamSpec("exit_on_end", True, "exit the node once the session has ended", read_only=True),
    ParamSpec("recorder_confirms", False,
              "a recorder follows this session: count a take saved only once the recorder reports "
              "it kept it (recorder/episode_report); a take it drops is redone, and num_episodes "
              "counts confirmed takes", read_only=True),
    ParamSpec("keyboard_episode_keys", True,
              "when stdin is a terminal, read episode keys (enter, backspace, ctrl-c) from it whatever "
              "the source", read_only=True),
    ParamSpec("base_frame", "base_link", "frame of the ee_command poses", read_only=True),
    ParamSpec("diagnostics_period", 1.0, "period of the diagnostics status", "s", (0.1, 60.0), read_only=True),
    ParamSpec("device_retry_period", 2.0, "wait between attempts to open a missing gamepad or leader bus",
              "s", (0.1, 60.0), read_only=True),
    # jog target (keyboard, gamepad)
    ParamSpec("workspace_min", [0.05, -0.40, 0.01], "lower corner of the box the jog target stays in "
              "(x, y, z in base_frame)", "m"),
    ParamSpec("workspace_max", [0.45, 0.40, 0.45], "upper corner of that box", "m"),
    ParamSpec("max_lead", 0.05, "largest distance of the jog target from the measured ee position", "m",
              (0.001, 1.0)),
    ParamSpec("max_angle_lead", 0.5, "largest angle of the jog target from the measured ee orientation",
              "rad", (0.01, 3.1416)),
    ParamSpec("gripper_open", 0.034, "left_finger opening of the open gripper", "m", (0.0, 0.1)),
    ParamSpec("gripper_closed", 0.0, "left_finger opening commanded to grip (the servo's current limit "
              "sets the force)", "m", (0.0, 0.1)),
    ParamSpec("key_linear_step", 0.005, "translation per key press", "m", (0.0001, 0.1)),
    ParamSpec("key_angular_step", 0.05, "rotation per key press", "rad", (0.001, 1.0)),
    ParamSpec("key_gripper_step", 0.004, "gripper opening change per [ or ] press", "m", (0.0001, 0.05)),
    ParamSpec("gamepad_device", "", "evdev device of the gamepad, e.g. /dev/input/event5; empty: the first "
              "gamepad found", read_only=True),
    ParamSpec("gamepad_linear_speed", 0.10, "ee speed at full stick", "m/s", (0.001, 1.0)),
    ParamSpec("gamepad_angular_speed", 0.8, "ee turn rate at full stick or d-pad", "rad/s", (0.01, 5.0)),
    ParamSpec("gamepad_deadzone", 0.12, "stick travel ignored around the centre", range=(0.0, 0.9)),
    # leader arm
    ParamSpec("leader_config", "robot/leader_dynamixel.yaml", "leader arm bus and calibration file (servo "
              "config format), absolute or relative to armstack's config/ directory", read_only=True),
    ParamSpec("leader_port", "", "serial port of the leader bus; empty: the leader file's", read_only=True),
    ParamSpec("leader_max_speed", 3.0, "speed limit of revolute joint commands from the leader; 0: none",
              "rad/s", (0.0, 20.0), read_only=True),
    ParamSpec("leader_max_gripper_speed", 0.2, "speed limit of the gripper command from the leader; 0: none",
              "m/s", (0.0, 2.0), read_only=True),
    # scripted expert (simulator)
    ParamSpec("expert_ee_source", "joint_states", "where the expert's ee pose comes from: FK of joint_states "
              "(as measured by the driver) or the simulator's true sim/ee_pose", choices=EE_SOURCES,
              read_only=True),
    ParamSpec("expert_linear_speed", 0.25, "average ee speed of the expert's moves", "m/s", (0.01, 2.0),
              read_only=True),
    ParamSpec("expert_angular_speed", 1.5, "average ee turn rate of the expert's moves", "rad/s",
              (0.05, 10.0), read_only=True),
    # The gripper servo's profile (robot/dynamixel.yaml: profile_velocity 100 = 0.039 m/s of
    # finger travel) needs ~1 s to close on a cube; the expert must not lift before.
    ParamSpec("expert_close_time", 1.2, "the expert waits this long for the gripper to close before "
              "lifting", "s", (0.05, 10.0), read_only=True),
    ParamSpec("expert_open_time", 1.0, "the expert waits this long for the gripper to open before "
              "moving on", "s", (0.05, 10.0), read_only=True),
    ParamSpec("expert_pick_order", "listed", "which cube the expert takes next: the nearest to the "
              "gripper, or the listed (alphabetical) order, which policies learn more easily",
              choices=PICK_ORDERS, read_only=True),
    ParamSpec("expert_grasp_yaw", "azimuth", "finger axis of the expert's grasps: normal to the "
              "cube's faces ('cube'), or the wrist's natural direction at the cube ('azimuth'), "
              "which a policy that sees object positions but not their yaw can learn",
              choices=GRASP_YAWS, read_only=True),
    ParamSpec("expert_miss_rate", 0.0, "probability that the expert's first grasp of a cube aims beside it "
              "on purpose, so the recording shows a failed grasp and its retry (states a policy meets "
              "after its own misses)", range=(0.0, 1.0), read_only=True),
    ParamSpec("expert_miss_offset", 0.025, "how far beside the cube centre a deliberate miss aims, "
              "towards or away from the arm", "m", (0.0, 0.1), read_only=True),
    ParamSpec("expert_max_grasp_offset", 0.01, "a cube centre farther than this from the closed "
              "fingers' axis is an edge grasp: the expert opens and grasps again", "m", (0.001, 0.1),
              read_only=True),
    ParamSpec("expert_start_at_miss", False, "start each take after an unrecorded deliberate miss of one "
              "cube: the take shows the recovery from a failed grasp but not the miss itself",
              read_only=True),
    ParamSpec("expert_seed", 0, "seed of the expert's deliberate misses and command noise; -1 "
              "draws one (as the simulator's seed)", range=(-1, 2**31 - 1), read_only=True),
    ParamSpec("expert_noise_std", 0.0, "standard deviation per axis of a smooth random offset added "
              "to the expert's executed ee position (DART); the clean command goes out on "
              "expert/clean_ee_command for the recorder; 0: off", "m", (0.0, 0.05), read_only=True),
    ParamSpec("expert_noise_time_constant", 0.5, "correlation time of that offset", "s",
              (0.02, 10.0), read_only=True),
    ParamSpec("expert_noise_quiet_phases", "", f"comma-separated expert phases "
              f"({', '.join(EXPERT_PHASES)}) in which that offset fades to zero, e.g. "
              "descend,close for grasps demonstrated on the cube; empty: none", read_only=True),
    ParamSpec("expert_noise_fade_time", 0.2, "time constant of that fade", "s", (0.01, 5.0),
              read_only=True),
    ParamSpec("expert_time_limit", 60.0, "longest expert take; a longer one is discarded", "s",
              (1.0, 3600.0), read_only=True),
    ParamSpec("expert_settle_after_reset", 1.5, "pause after sim/reset before the next take (longer than "
              "the IK node's resync_after, so it restarts from the measured joints)", "s", (0.0, 30.0),
              read_only=True),
    ParamSpec("expert_max_observation_age", 0.5, "object poses or joint states older than this hold the "
              "expert", "s", (0.01, 10.0), read_only=True),
    ParamSpec("expert_keep_failures", False, "save expert takes that end with an object outside the bin",
              read_only=True),
    ParamSpec("bin_center", [0.16, -0.27], "centre (x, y) of the simulator's bin in base_frame", "m",
              read_only=True),
    ParamSpec("bin_floor_height", 0.006, "height of the bin's floor above the table", "m", (0.0, 0.5),
              read_only=True),
    ParamSpec("bin_inner_size", 0.13, "side of the bin's square opening", "m", (0.01, 1.0), read_only=True),
    ParamSpec("bin_wall_height", 0.05, "height of the bin's walls above the table", "m", (0.005, 1.0),
              read_only=True),
)


@dataclass(frozen=True)
class TeleopConfig:
    source: str
    rate: float  # Hz
    task: str
    num_episodes: int
    exit_on_end: bool
    recorder_confirms: bool
    keyboard_episode_keys: bool
    base_frame: str
    diagnostics_period: float  # s
    device_retry_period: float  # s
    jog: JogConfig
    keyboard: KeyboardConfig
    gamepad: GamepadConfig
    gamepad_device: str
    leader: LeaderConfig
    leader_config: str
    leader_port: str
    expert_ee_source: str
    expert: ExpertSessionConfig | None  # only for source "expert"

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"TeleopConfig.source must be one of {SOURCES}, got {self.source!r}")
        if not self.task.strip():
            raise ValueError("TeleopConfig.task must be a non-empty string")
        if not self.base_frame:
            raise ValueError("TeleopConfig.base_frame must not be empty")
        if self.source == "expert" and self.expert is None:
            raise ValueError("TeleopConfig.expert is required for source 'expert'")
        if self.expert_ee_source not in EE_SOURCES:
            raise ValueError(f"TeleopConfig.expert_ee_source must be one of {EE_SOURCES}")


def _floats(values: dict[str, Any], name: str, count: int) -> tuple[float, ...]:
    # rclpy hands double arrays over as array.array('d').
    result = tuple(float(v) for v in values[name])
    if len(result) != count:
        raise ValueError(f"{name} must have {count} values, got {len(result)}")
    return result


def _expert_config(values: dict[str, Any]) -> ExpertSessionConfig:
    # Imported here: it pulls in the simulator (MuJoCo), which only the expert source needs.
    from armstack_sim.expert import ExpertConfig

    from armstack_teleop.command_noise import CommandNoiseConfig
    from armstack_teleop.expert_session import ExpertSessionConfig

    return ExpertSessionConfig(
        expert=ExpertConfig(
            linear_speed=float(values["expert_linear_speed"]),
            angular_speed=float(values["expert_angular_speed"]),
            gripper_open=float(values["gripper_open"]),
            gripper_closed=float(values["gripper_closed"]),
            close_time=float(values["expert_close_time"]),
            open_time=float(values["expert_open_time"]),
            pick_order=str(values["expert_pick_order"]),
            grasp_yaw=str(values["expert_grasp_yaw"]),
            miss_rate=float(values["expert_miss_rate"]),
            miss_offset=float(values["expert_miss_offset"]),
            max_grasp_offset=float(values["expert_max_grasp_offset"]),
        ),
        seed=int(values["expert_seed"]),
        start_at_miss=bool(values["expert_start_at_miss"]),
        noise=CommandNoiseConfig(
            std=float(values["expert_noise_std"]),
            time_constant=float(values["expert_noise_time_constant"]),
            quiet_phases=comma_separated(str(values["expert_noise_quiet_phases"])),
            fade_time=float(values["expert_noise_fade_time"])),
        bin_center=_floats(values, "bin_center", 2),
        bin_floor_height=float(values["bin_floor_height"]),
        bin_inner_size=float(values["bin_inner_size"]),
        bin_wall_height=float(values["bin_wall_height"]),
        time_limit=float(values["expert_time_limit"]),
        settle_after_reset=float(values["expert_settle_after_reset"]),
        max_observation_age=float(values["expert_max_observation_age"]),
        keep_failures=bool(values["expert_keep_failures"]),
    )


def teleop_config(values: dict[str, Any]) -> TeleopConfig:
    """The node config from a full set of TELEOP_PARAMS values; ValueError names the field."""
    jog = JogConfig(
        workspace_min=_floats(values, "workspace_min", 3),
        workspace_max=_floats(values, "workspace_max", 3),
        max_lead=float(values["max_lead"]),
        max_angle_lead=float(values["max_angle_lead"]),
        gripper_open=float(values["gripper_open"]),
        gripper_closed=float(values["gripper_closed"]),
    )
    return TeleopConfig(
        source=values["source"],
        rate=float(values["rate"]),
        task=str(values["task"]),
        num_episodes=int(values["num_episodes"]),
        exit_on_end=bool(values["exit_on_end"]),
        recorder_confirms=bool(values["recorder_confirms"]),
        keyboard_episode_keys=bool(values["keyboard_episode_keys"]),
        base_frame=str(values["base_frame"]),
        diagnostics_period=float(values["diagnostics_period"]),
        device_retry_period=float(values["device_retry_period"]),
        jog=jog,
        keyboard=KeyboardConfig(
            linear_step=float(values["key_linear_step"]),
            angular_step=float(values["key_angular_step"]),
            gripper_step=float(values["key_gripper_step"]),
        ),
        gamepad=GamepadConfig(
            linear_speed=float(values["gamepad_linear_speed"]),
            angular_speed=float(values["gamepad_angular_speed"]),
            deadzone=float(values["gamepad_deadzone"]),
        ),
        gamepad_device=str(values["gamepad_device"]),
        leader=LeaderConfig(
            max_speed=float(values["leader_max_speed"]),
            max_gripper_speed=float(values["leader_max_gripper_speed"]),
        ),
        leader_config=str(values["leader_config"]),
        leader_port=str(values["leader_port"]),
        expert_ee_source=str(values["expert_ee_source"]),
        expert=_expert_config(values) if values["source"] == "expert" else None,
    )


def default_values() -> dict[str, Any]:
    """Every parameter at its default (for tests and tools)."""
    return {spec.name: spec.default for spec in TELEOP_PARAMS}
