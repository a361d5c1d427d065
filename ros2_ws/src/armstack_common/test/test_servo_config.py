"""The servo bus configuration: the repository's file, the conversions, and errors that name the key."""

import math
import textwrap

import numpy as np
import pytest

from armstack_common import paths
from armstack_common.servo_config import (
    SERVO_MODELS,
    SERVO_MODELS_BY_NUMBER,
    TICKS_PER_RAD,
    OperatingMode,
    ServoConfigError,
    load_default_servo_config,
    load_servo_config,
    velocity_units_to_rad_s,
)

URDF = textwrap.dedent("""\
    <robot name="t">
      <link name="a"/><link name="b"/><link name="c"/>
      <joint name="spin" type="revolute"><parent link="a"/><child link="b"/>
        <limit lower="-1.5" upper="2.0" effort="1" velocity="1"/></joint>
      <joint name="finger" type="prismatic"><parent link="b"/><child link="c"/>
        <limit lower="0.0" upper="0.04" effort="1" velocity="1"/></joint>
    </robot>
""")

GOOD = {
    "spin": "id: 1\n    model: XM430-W350\n    direction: -1\n    offset_ticks: 2048\n"
            "    operating_mode: extended_position",
    "finger": "id: 2\n    model: XM430-W350\n    offset_ticks: 1000\n    ticks_per_metre: 50000\n"
              "    operating_mode: current_based_position\n    goal_current_ma: 200",
}


def _write(tmp_path, joints=GOOD, header="port: /dev/null\nbaudrate: 1000000\n"):
    body = header + "joints:\n" + "".join(f"  {name}:\n    {entry}\n" for name, entry in joints.items())
    path = tmp_path / "bus.yaml"
    path.write_text(body)
    urdf = tmp_path / "t.urdf"
    urdf.write_text(URDF)
    return path, urdf


def test_repository_config_matches_the_urdf():
    config = load_default_servo_config()
    assert config.joint_names == ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle",
                                  "wrist_rotate", "left_finger"]
    assert config.ids == list(range(1, 8))
    assert config.baudrate == 4_000_000 and config.protocol_version == 2.0
    # Model numbers a PING returns (e-manual): how a driver checks it talks to the configured servo.
    assert SERVO_MODELS_BY_NUMBER[1020] is SERVO_MODELS["XM430-W350"]
    assert SERVO_MODELS_BY_NUMBER[1060] is SERVO_MODELS["XL430-W250"]
    finger = config.by_joint("left_finger")
    assert finger.prismatic and finger.operating_mode == OperatingMode.CURRENT_BASED_POSITION
    assert all(j.operating_mode == OperatingMode.EXTENDED_POSITION for j in config.joints[:6])
    urdf_text = paths.urdf_path().read_text()
    for joint in config.joints:
        assert f'name="{joint.joint}"' in urdf_text
        low, high = joint.position_limits_ticks()
        assert -1_048_575 <= low < high <= 1_048_575


def test_joint_tick_conversions(tmp_path):
    config = load_servo_config(*_write(tmp_path))
    spin, finger = config.joints
    assert (spin.min_position, spin.max_position) == (-1.5, 2.0)  # from the URDF
    assert spin.to_ticks(0.0) == 2048 and spin.to_ticks(math.pi / 2) == 1024  # direction -1
    assert finger.to_ticks(0.04) == 3000
    assert spin.position_limits_ticks() == (spin.to_ticks(2.0), spin.to_ticks(-1.5))
    q = np.array([0.7, 0.013])
    ticks = config.joint_to_ticks(q)
    assert ticks.dtype == np.int64 and ticks.shape == (2,)
    np.testing.assert_allclose(config.ticks_to_joint(ticks), q, atol=0.5 / TICKS_PER_RAD)
    np.testing.assert_allclose(config.clip_joint([3.0, -1.0]), [2.0, 0.0])
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        config.joint_to_ticks([0.1, 0.2, 0.3])


def test_velocity_and_current_conversions(tmp_path):
    config = load_servo_config(*_write(tmp_path))
    assert velocity_units_to_rad_s(1) == pytest.approx(0.229 * 2 * math.pi / 60)
    # -1 direction: a positive motor velocity is a negative joint velocity.
    np.testing.assert_allclose(config.velocity_units_to_joint([100, 100]),
                               [-velocity_units_to_rad_s(100),
                                100 * 0.229 / 60 * 4096 / 50000])
    np.testing.assert_allclose(config.joint_velocity_to_units(config.velocity_units_to_joint([37, -5])),
                               [37, -5])
    np.testing.assert_allclose(config.current_units_to_amps([100, 100]), [-0.269, 0.269])
    np.testing.assert_allclose(config.amps_to_current_units([-0.269, 0.538]), [100, 200])
    assert config.by_joint("finger").goal_current_units == 74  # 200 mA / 2.69 mA
    assert config.by_joint("spin").goal_current_units is None


def test_stated_limits_override_the_urdf(tmp_path):
    joints = {name: entry + "\n    min_position: -0.5\n    max_position: 0.5" for name, entry in GOOD.items()}
    config = load_servo_config(*_write(tmp_path, joints))
    assert (config.joints[0].min_position, config.joints[0].max_position) == (-0.5, 0.5)
    path, _ = _write(tmp_path, joints)
    assert load_servo_config(path).joints[0].max_position == 0.5  # no URDF needed then


@pytest.mark.parametrize(("joint", "change", "key"), [
    ("spin", ("XM430-W350", "XM999"), "joints.spin.model"),
    ("spin", ("direction: -1", "direction: 2"), "joints.spin.direction"),
    ("spin", ("id: 1", "id: 2"), "joints.finger.id"),  # the second user of id 2
    ("spin", ("id: 1", "id: 1.5"), "joints.spin.id"),
    ("spin", ("extended_position", "spinning"), "joints.spin.operating_mode"),
    ("spin", ("offset_ticks: 2048", "offset_ticks: 2048\n    colour: red"), "joints.spin.colour"),
    ("spin", ("extended_position", "position\n    offset_ticks: 100"), "joints.spin.offset_ticks"),
    ("finger", ("XM430-W350", "XL430-W250"), "joints.finger.operating_mode"),
    ("finger", ("\n    ticks_per_metre: 50000", ""), "joints.finger.ticks_per_metre"),
    ("finger", ("goal_current_ma: 200", "goal_current_ma: -3"), "joints.finger.goal_current_ma"),
])
def test_errors_name_the_file_and_key(tmp_path, joint, change, key):
    joints = dict(GOOD)
    joints[joint] = joints[joint].replace(*change, 1)
    path, urdf = _write(tmp_path, joints)
    with pytest.raises(ServoConfigError) as excinfo:
        load_servo_config(path, urdf)
    assert str(path) in str(excinfo.value) and key in str(excinfo.value)


def test_bus_level_errors(tmp_path):
    path, urdf = _write(tmp_path, header="port: /dev/null\nbaudrate: 1234\n")
    with pytest.raises(ServoConfigError, match=r"bus\.yaml: baudrate"):
        load_servo_config(path, urdf)
    path, urdf = _write(tmp_path, header="port: /dev/null\nbaudrate: 57600\nprotocol_version: 1.0\n")
    with pytest.raises(ServoConfigError, match="protocol_version"):
        load_servo_config(path, urdf)
    path, _ = _write(tmp_path)
    with pytest.raises(ServoConfigError, match="joints.spin.min_position: not stated"):
        load_servo_config(path)  # no URDF and no stated limits
    path, urdf = _write(tmp_path, {"nosuch": GOOD["spin"]})
    with pytest.raises(ServoConfigError, match="no joint 'nosuch' in the URDF"):
        load_servo_config(path, urdf)
