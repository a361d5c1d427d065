"""tools/calibrate_arm.py against the emulated bus: a "real" arm whose true calibration differs
from dynamixel.yaml (offsets, reversed servos, the gripper linkage) is posed by the test as a user
would pose it, and the tool must write the true values into its copy of the file."""

import subprocess
import sys

import numpy as np
import pytest
import yaml

from armstack_common import paths
from armstack_common.servo_config import load_servo_config
from armstack_sim.dynamixel_bus import DynamixelBusEmulator

TOOL = paths.config_dir().parent / "tools" / "calibrate_arm.py"
# The true servo map of the arm on the bench: (offset_ticks, direction) per joint, and the finger.
TRUE_OFFSETS = np.array([2100, 1985, 3050, 2048, 1000, 2400, 1350])
TRUE_DIRECTIONS = np.array([1, -1, 1, -1, 1, 1, -1])
TRUE_TICKS_PER_METRE = 38_000.0


def _true_ticks(servo_config, q: np.ndarray) -> np.ndarray:
    per_unit = np.array([j.ticks_per_unit for j in servo_config.joints])
    per_unit[6] = TRUE_TICKS_PER_METRE
    return np.rint(TRUE_OFFSETS + TRUE_DIRECTIONS * per_unit * q)


class Session:
    """The tool as a subprocess; answers its prompts after posing the emulated arm. The emulator
    answers from this process, which a loaded machine may stall: the tool retries more."""

    def __init__(self, port: str, output, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-u", str(TOOL), "--port", port, "--output", str(output),
             "--samples", "3", "--io-attempts", "10", *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.transcript: list[str] = []

    def next_prompt(self) -> str:
        while True:
            line = self.proc.stdout.readline()
            assert line, "tool exited early:\n" + "".join(self.transcript)
            self.transcript.append(line)
            if "press Enter" in line:
                return self.transcript[-2]

    def answer(self) -> None:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def finish(self) -> int:
        if not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.transcript.append(self.proc.stdout.read())
        return self.proc.wait(timeout=20)


@pytest.fixture
def emulator(servo_config):
    with DynamixelBusEmulator(servo_config) as emu:
        yield emu


def test_calibration_recovers_the_true_servo_map(emulator, servo_config, tmp_path):
    output = tmp_path / "dynamixel.calibrated.yaml"
    pose = np.zeros(7)
    emulator.set_present_array(_true_ticks(servo_config, pose), 0, 0)
    session = Session(emulator.port_path, output)
    assert "reference pose" in session.next_prompt()
    session.answer()
    for k, joint in enumerate(servo_config.joints):
        text = session.next_prompt()
        assert joint.joint in text
        pose[k] = joint.max_position if joint.prismatic else 0.5  # the user moves it, positive way
        emulator.set_present_array(_true_ticks(servo_config, pose), 0, 0)
        session.answer()
    assert session.finish() == 0, "".join(session.transcript)
    assert not any(emulator.torque_enabled(j.servo_id) for j in servo_config.joints)

    calibrated = load_servo_config(output, paths.urdf_path())
    assert [j.direction for j in calibrated.joints] == TRUE_DIRECTIONS.tolist()
    assert [j.offset_ticks for j in calibrated.joints] == pytest.approx(TRUE_OFFSETS.tolist(), abs=1)
    assert calibrated.by_joint("left_finger").ticks_per_unit == pytest.approx(TRUE_TICKS_PER_METRE, rel=0.01)
    # The rest of the file is untouched, comments included.
    text = output.read_text()
    assert "# fingers closed (0 m)" in text and "model: XL430-W250        # no current sensor" in text
    original = yaml.safe_load((paths.config_dir() / "robot" / "dynamixel.yaml").read_text())
    written = yaml.safe_load(text)
    for name, entry in original["joints"].items():
        for key in ("id", "model", "operating_mode", "profile_velocity"):
            assert written["joints"][name][key] == entry[key]


def test_a_joint_that_did_not_move_is_asked_again(emulator, servo_config, tmp_path):
    emulator.set_present_array(_true_ticks(servo_config, np.zeros(7)), 0, 0)
    session = Session(emulator.port_path, tmp_path / "out.yaml")
    session.next_prompt()
    session.answer()
    assert "waist" in session.next_prompt()
    session.answer()  # the user did not move it
    assert "waist" in session.next_prompt()
    assert "waist moved only 0 ticks" in "".join(session.transcript)
    session.proc.stdin.close()  # the user gives up
    assert session.finish() == 1
    assert not (tmp_path / "out.yaml").exists()
