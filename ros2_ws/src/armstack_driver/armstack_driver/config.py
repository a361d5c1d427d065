"""The driver node's parameters (declared once, with units and ranges) and its validated config.

Plain module: no rclpy.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from armstack_common import paths
from armstack_common.params import ParamSpec

from armstack_driver.bus import BusOptions
from armstack_driver.loop import LoopConfig
from armstack_driver.safety import SafetyConfig

PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("servo_config", "robot/dynamixel.yaml",
              "servo bus file (ids, models, calibration), relative to the config dir or absolute",
              read_only=True),
    ParamSpec("port", "", "serial port; empty: the port in servo_config (the simulator's bus: "
              "/tmp/armstack_sim_servo_bus)", read_only=True),
    ParamSpec("autostart", True, "configure and activate at start (no lifecycle manager needed)",
              read_only=True),
    ParamSpec("configure_retry_s", 2.0, "autostart tries configure + activate again this often until "
              "motion is enabled once (port or servo missing at start); 0: never", "s", (0.0, 60.0),
              read_only=True),
    ParamSpec("rate_hz", 200.0, "bus loop rate: one sync read + one sync write per cycle", "Hz",
              (50.0, 1000.0)),
    ParamSpec("read_retries", 3, "extra sync reads after a failed one, before motion stops", "",
              (0, 10)),
    ParamSpec("reply_margin_ms", 20.0, "how long a sync read waits past the wire time of all replies "
              "(raised to 2 latency timers + 2 ms on a USB adapter)", "ms", (0.5, 100.0), read_only=True),
    ParamSpec("max_step_rad", 0.02, "largest goal change per cycle of a revolute joint", "rad",
              (0.0005, 0.5)),
    ParamSpec("max_step_m", 0.002, "largest goal change per cycle of the gripper (prismatic)", "m",
              (0.00005, 0.05)),
    ParamSpec("command_timeout_s", 0.5, "no joint_command for this long: hold position", "s",
              (0.02, 10.0)),
    ParamSpec("limit_tolerance_rad", 0.01, "a command this far past a joint limit is clipped; "
              "further out it is rejected", "rad", (0.0, 0.2)),
    ParamSpec("limit_tolerance_m", 0.001, "the same for the gripper", "m", (0.0, 0.01)),
    ParamSpec("bus_watchdog_ms", 0, "servos' own Bus Watchdog, armed at each enable (multiple of "
              "20; 0: off): the servos stop if the driver falls silent", "ms", (0, 2540)),
    ParamSpec("estop_torque_off", False, "after an e-stop (or deactivate): hold, then torque off "
              "(the arm goes limp and may fall)"),
    ParamSpec("estop_torque_off_delay_s", 0.5, "hold this long after an e-stop before torque off",
              "s", (0.0, 10.0)),
    ParamSpec("torque_off_on_shutdown", False, "torque off when the node shuts down or cleans up"),
    ParamSpec("reboot_on_enable", True, "driver/enable reboots servos reporting a hardware error"),
    ParamSpec("diagnostics_period_s", 1.0, "period of the diagnostics message", "s", (0.1, 60.0),
              read_only=True),
    ParamSpec("rate_warn_fraction", 0.9, "diagnostics warn when the measured loop rate falls below "
              "this fraction of rate_hz", "", (0.0, 1.0)),
    ParamSpec("rate_error_fraction", 0.5, "diagnostics error when the measured loop rate falls below "
              "this fraction of rate_hz; <= rate_warn_fraction", "", (0.0, 1.0)),
)


@dataclass(frozen=True)
class DriverConfig:
    servo_config: str = "robot/dynamixel.yaml"
    port: str = ""
    autostart: bool = True
    configure_retry_s: float = 2.0
    rate_hz: float = 200.0
    read_retries: int = 3
    reply_margin_ms: float = 20.0
    max_step_rad: float = 0.02
    max_step_m: float = 0.002
    command_timeout_s: float = 0.5
    limit_tolerance_rad: float = 0.01
    limit_tolerance_m: float = 0.001
    bus_watchdog_ms: int = 0
    estop_torque_off: bool = False
    estop_torque_off_delay_s: float = 0.5
    torque_off_on_shutdown: bool = False
    reboot_on_enable: bool = True
    diagnostics_period_s: float = 1.0
    rate_warn_fraction: float = 0.9
    rate_error_fraction: float = 0.5

    def __post_init__(self) -> None:
        if not self.servo_config:
            raise ValueError("servo_config must name the servo bus file")
        if self.rate_error_fraction > self.rate_warn_fraction:
            raise ValueError(f"rate_error_fraction must be <= rate_warn_fraction (a rate floor), got "
                             f"{self.rate_error_fraction} > {self.rate_warn_fraction}")
        if self.command_timeout_s * self.rate_hz < 2:
            raise ValueError(f"command_timeout_s {self.command_timeout_s} is shorter than two cycles "
                             f"at rate_hz {self.rate_hz}")
        # The component configs validate the rest, each naming its field.
        self.safety()
        self.loop()
        self.bus_options()

    @classmethod
    def from_params(cls, values: dict[str, Any]) -> DriverConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def servo_config_path(self) -> Path:
        path = Path(self.servo_config).expanduser()
        return path if path.is_absolute() else paths.config_file(self.servo_config)

    def safety(self) -> SafetyConfig:
        return SafetyConfig(self.max_step_rad, self.max_step_m, self.command_timeout_s,
                            self.limit_tolerance_rad, self.limit_tolerance_m)

    def loop(self) -> LoopConfig:
        return LoopConfig(self.rate_hz, self.read_retries, self.bus_watchdog_ms, self.estop_torque_off,
                          self.estop_torque_off_delay_s, self.reboot_on_enable)

    def bus_options(self) -> BusOptions:
        return BusOptions(reply_margin_ms=self.reply_margin_ms)
