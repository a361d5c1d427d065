"""The real driver node (subprocess) on the emulated bus: the lifecycle acquires and releases
the bus, and shutdown leaves the torque as configured."""

import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState


def _transition(obs, transition_id: int) -> bool:
    request = ChangeState.Request()
    request.transition.id = transition_id
    return obs.call(ChangeState, "driver/change_state", request=request).success


def test_lifecycle_releases_and_reacquires_the_bus(start_driver, driver_observer, arm):
    start_driver()
    obs = driver_observer
    obs.wait_mode("active")
    assert _transition(obs, Transition.TRANSITION_DEACTIVATE)
    obs.wait_mode("inactive", 10.0)
    assert arm.bus.torque_enabled(1)  # estop_torque_off is false: the arm keeps holding
    assert _transition(obs, Transition.TRANSITION_CLEANUP)
    obs.spin_for(0.3)
    obs.messages["joint_states"].clear()
    obs.spin_for(0.5)
    assert not obs.messages["joint_states"]  # port closed, loop stopped
    assert _transition(obs, Transition.TRANSITION_CONFIGURE)
    assert _transition(obs, Transition.TRANSITION_ACTIVATE)
    obs.wait_mode("active", 10.0)
    assert obs.messages["joint_states"]


@pytest.mark.parametrize("torque_off", [True, False])
def test_torque_off_on_shutdown_only_when_configured(start_driver, driver_observer, arm, torque_off):
    driver = start_driver(torque_off_on_shutdown=torque_off)
    driver_observer.wait_mode("active")
    assert driver.stop() == 0
    assert [arm.bus.torque_enabled(i) for i in range(1, 8)] == [not torque_off] * 7
