"""The expert as a teleop source, against a small kinematic world: resets, takes, save/discard rules."""

from __future__ import annotations

import re

import numpy as np
import pytest
from armstack_sim.world import ObjectPose, SimConfig

from armstack_teleop.episode import EpisodeController, Event, State
from armstack_teleop.expert_session import ExpertSession, ExpertSessionConfig, Observation, Phase
from armstack_teleop.node_config import default_values, teleop_config

CUBE = 0.03
DT = 0.02
QUAT = np.array([0.0, 0.0, 0.0, 1.0])


class KinematicWorld:
    """The arm goes exactly where commanded; a closed gripper at a cube carries it (unless
    `slippery`); an opened one drops it straight down onto the table or the bin floor."""

    def __init__(self, config: ExpertSessionConfig, cube_xy=(0.25, 0.10), slippery: bool = False) -> None:
        self.config = config
        self.slippery = slippery
        self.ee = np.eye(4)
        self.ee[:3, 3] = (0.14, 0.0, 0.25)
        self.gripper = 0.034
        self.cube = np.array([*cube_xy, CUBE / 2])
        self.held: np.ndarray | None = None  # cube offset from the ee

    def apply(self, pose: np.ndarray, gripper: float) -> None:
        self.ee, self.gripper = pose.copy(), gripper
        near = np.linalg.norm(self.cube - self.ee[:3, 3]) < 0.02
        if self.held is None and gripper <= 0.005 and near and not self.slippery:
            self.held = self.cube - self.ee[:3, 3]
        if self.held is not None and gripper > 0.01:
            self.held = None
            bin_xy = np.array(self.config.bin_center)
            inside = np.all(np.abs(self.cube[:2] - bin_xy) < self.config.bin_inner_size / 2)
            self.cube[2] = (self.config.bin_floor_height if inside else 0.0) + CUBE / 2
        if self.held is not None:
            self.cube = self.ee[:3, 3] + self.held

    def observe(self, stamp: float) -> Observation:
        objects = {"red_cube": ObjectPose("red_cube", "red", self.cube.copy(), QUAT, CUBE)}
        return Observation(self.ee.copy(), self.gripper, objects, stamp, stamp)


def fast_config(**changes) -> ExpertSessionConfig:
    values = default_values() | {"source": "expert", "expert_linear_speed": 0.5,
                                 "expert_settle_after_reset": 0.1} | changes
    config = teleop_config(values).expert
    assert config is not None
    return config


class Run:
    """The session, an episode controller and the world, stepped at 50 Hz of simulated time."""

    def __init__(self, config: ExpertSessionConfig, world: KinematicWorld | None = None, target: int = 1,
                 confirm_saves: bool = False) -> None:
        self.session = ExpertSession(config)
        self.episodes = EpisodeController("put the cubes in the bin", "expert", target,
                                          confirm_saves=confirm_saves)
        self.world = world or KinematicWorld(config)
        self.now = 0.0
        self.events: list[Event] = []
        self.notes: list[str] = []
        self.resets = 0
        self.commanded_ticks = 0
        self.deliberate: list[tuple[State, bool]] = []  # per command: episode state, flag

    def step(self, reset_ok: bool = True, stale: bool = False) -> None:
        obs = self.world.observe(self.now - 1.0 if stale else self.now)
        step = self.session.tick(self.now, self.episodes.status, obs)
        if step.note:
            self.notes.append(step.note)
        if step.event is not None:
            assert self.episodes.apply(step.event, self.now).accepted
            self.events.append(step.event)
        if step.action is not None:
            self.world.apply(step.action.ee_pose, step.action.gripper)
            self.commanded_ticks += 1
            self.deliberate.append((self.episodes.state, step.action.deliberate))
        if step.request_reset:
            self.resets += 1
            self.session.reset_done(self.now, reset_ok, "episode reset" if reset_ok else "no simulator")
        self.now += DT

    def until(self, predicate, limit: float = 120.0, **kwargs) -> None:
        end = self.now + limit
        while not predicate():
            assert self.now < end, f"not reached within {limit} s; events {self.events}, notes {self.notes}"
            self.step(**kwargs)


def test_a_take_from_reset_to_save() -> None:
    run = Run(fast_config(), target=2)
    run.step()
    assert run.resets == 1 and run.session.phase is Phase.SETTLING
    run.until(lambda: run.events)
    assert run.events == [Event.START] and run.now >= 0.1  # not before the settle time
    started = run.now
    run.until(lambda: len(run.events) == 2)
    assert run.events == [Event.START, Event.SAVE]
    assert run.session.results == [{"red_cube": True}]
    # Every tick of the take published a command (50 Hz), the take lasted a few seconds.
    assert run.commanded_ticks == pytest.approx((run.now - started) / DT, abs=2)
    assert 2.0 < run.now - started < 20.0
    run.step()
    assert run.resets == 2  # the next take begins with a new scene


def noisy_take(config: ExpertSessionConfig) -> tuple[ExpertSession, np.ndarray, list[str]]:
    """One expert take in a kinematic world that executes the perturbed commands; the session,
    each tick's executed-minus-clean position offset and the expert phase of that tick."""
    session = ExpertSession(config)
    episodes = EpisodeController("put the cubes in the bin", "expert", 1)
    world = KinematicWorld(config)
    offsets, phases, now, saved = [], [], 0.0, False
    while not saved:
        assert now < 120.0, "the noisy take did not finish"
        step = session.tick(now, episodes.status, world.observe(now))
        if step.event is not None:
            assert episodes.apply(step.event, now).accepted
            saved = step.event is Event.SAVE
        if step.request_reset:
            session.reset_done(now, True, "episode reset")
        if step.action is not None:
            executed = step.executed or step.action  # the last command (done) is not perturbed
            assert executed.gripper == step.action.gripper
            np.testing.assert_array_equal(executed.ee_pose[:3, :3], step.action.ee_pose[:3, :3])
            offsets.append(executed.ee_pose[:3, 3] - step.action.ee_pose[:3, 3])
            phases.append(step.action.phase)
            world.apply(executed.ee_pose, executed.gripper)  # the arm goes where it is sent
        now += DT
    return session, np.array(offsets), phases


def test_with_command_noise_the_arm_executes_an_offset_and_the_clean_command_is_kept() -> None:
    config = fast_config(expert_noise_std=0.004, expert_noise_time_constant=0.3, expert_seed=5)
    session, offsets, _ = noisy_take(config)
    assert np.array_equal(offsets[0], np.zeros(3))  # each take starts on the path
    assert 0.001 < np.abs(offsets).max() < 0.02  # perturbed, by millimetres
    # The expert still put the cube in the bin from the perturbed states.
    assert session.results == [{"red_cube": True}]
    without = ExpertSession(fast_config())
    status = EpisodeController("put the cubes in the bin", "expert", 1).status
    world = KinematicWorld(config)
    assert without.tick(0.0, status, world.observe(0.0)).executed is None


def test_noise_fades_out_in_the_quiet_phases_and_drifts_again_after_them() -> None:
    config = fast_config(expert_noise_std=0.004, expert_noise_time_constant=0.3, expert_seed=5,
                         expert_noise_quiet_phases="descend, close", expert_noise_fade_time=0.1)
    session, offsets, phases = noisy_take(config)
    quiet = [k for k in range(1, len(phases)) if phases[k] in ("descend", "close")]
    assert {phases[k] for k in quiet} == {"descend", "close"}
    # Each quiet tick only shrinks the offset, by exp(-dt / fade_time).
    for k in quiet:
        np.testing.assert_allclose(offsets[k], offsets[k - 1] * np.exp(-DT / 0.1), atol=1e-12)
    assert np.abs(offsets[quiet[-1]]).max() < 1e-4  # closed on the clean target, within 0.1 mm
    lift = [k for k in range(1, len(phases)) if phases[k] == "lift"]
    assert np.abs(offsets[lift[-1]]).max() > 1e-4  # drifting again
    assert session.results == [{"red_cube": True}]


def test_start_at_miss_starts_the_take_after_the_deliberate_miss() -> None:
    run = Run(fast_config(expert_start_at_miss=True), target=2)
    run.until(lambda: run.events)
    assert run.events == [Event.START]
    assert any("missing red_cube before the take starts" in n for n in run.notes)
    assert any("missed red_cube on purpose: the take starts" in n for n in run.notes)
    before = [flag for state, flag in run.deliberate]
    # the miss was commanded, none of it while recording (this tick's command starts the take)
    assert any(before) and not before[-1]
    run.until(lambda: len(run.events) == 2)
    assert run.events == [Event.START, Event.SAVE]
    assert run.session.results == [{"red_cube": True}]
    recorded = [flag for state, flag in run.deliberate if state is State.RECORDING]
    assert recorded and not any(recorded)
    with pytest.raises(ValueError, match="start_at_miss needs ExpertConfig.miss_offset > 0"):
        fast_config(expert_start_at_miss=True, expert_miss_offset=0.0)


def test_the_session_stops_after_the_target() -> None:
    run = Run(fast_config(), target=1)
    run.until(lambda: run.episodes.state is State.FINISHED)
    for _ in range(10):
        run.step()
    assert run.session.phase is Phase.STOPPED and run.resets == 1


def test_with_recorder_confirmation_the_expert_waits_for_the_verdict() -> None:
    run = Run(fast_config(), target=1, confirm_saves=True)
    run.until(lambda: Event.SAVE in run.events)
    resets = run.resets
    for _ in range(50):  # a second: the recorder has not answered
        run.step()
    assert run.resets == resets and run.events == [Event.START, Event.SAVE]
    # the recorder dropped the take: the expert resets the scene and records another one
    run.episodes.recorder_verdict(run.episodes.status.take, kept=False, now=run.now)
    run.until(lambda: run.events.count(Event.SAVE) == 2)
    assert run.resets == resets + 1 and run.episodes.state is State.IDLE
    run.episodes.recorder_verdict(run.episodes.status.take, kept=True, now=run.now)
    assert run.episodes.state is State.FINISHED


def test_failed_take_is_discarded_and_redone() -> None:
    config = fast_config()
    run = Run(config, KinematicWorld(config, slippery=True), target=1)
    run.until(lambda: Event.DISCARD in run.events)
    assert run.events == [Event.START, Event.DISCARD]
    assert run.episodes.status.episode_index == 0  # redone under the same index
    # it says where the cubes it left are (not in the bin, so where a failure happened)
    assert any(re.search(r"not in the bin \(\w+ at \(-?\d\.\d{3}, -?\d\.\d{3}, -?\d\.\d{3}\)", note)
               for note in run.notes), run.notes
    run.step()
    assert run.resets == 2


def test_failed_take_kept_on_request() -> None:
    config = fast_config(expert_keep_failures=True)
    run = Run(config, KinematicWorld(config, slippery=True), target=1)
    run.until(lambda: len(run.events) == 2)
    assert run.events == [Event.START, Event.SAVE]
    assert run.session.results == [{"red_cube": False}]


def test_take_past_the_time_limit_is_discarded() -> None:
    run = Run(fast_config(expert_time_limit=1.0))
    run.until(lambda: len(run.events) == 2)
    assert run.events == [Event.START, Event.DISCARD]
    assert any("exceeded" in note for note in run.notes)


def test_take_ended_from_outside_leads_to_a_reset() -> None:
    run = Run(fast_config())
    run.until(lambda: run.events)
    for _ in range(20):
        run.step()
    run.episodes.apply(Event.DISCARD, run.now)  # the operator pressed backspace
    run.step()
    assert run.session.phase is Phase.NEED_RESET and "outside" in run.notes[-1]
    run.step()
    assert run.resets == 2


def test_a_take_already_started_by_the_operator_is_adopted() -> None:
    run = Run(fast_config())
    run.episodes.apply(Event.START, 0.0)
    run.until(lambda: run.session.phase is Phase.RUNNING)
    assert run.events == [] and run.episodes.status.take == 1


def test_stale_observations_hold_the_expert() -> None:
    run = Run(fast_config())
    run.until(lambda: run.events)
    before = run.commanded_ticks
    for _ in range(10):
        run.step(stale=True)
    assert run.commanded_ticks == before
    assert sum("stale" in note for note in run.notes) == 1  # said once
    run.step()
    assert run.commanded_ticks == before + 1 and "fresh again" in run.notes[-1]


def test_failed_reset_is_retried_after_the_period() -> None:
    run = Run(fast_config())
    run.step(reset_ok=False)
    assert run.resets == 1 and run.session.phase is Phase.NEED_RESET
    run.until(lambda: run.resets == 2, limit=3.0, reset_ok=False)
    period = ExpertSessionConfig().reset_retry_period
    assert run.now == pytest.approx(period + DT, abs=DT / 2)
    assert run.events == []


def test_no_take_before_observations_newer_than_the_reset() -> None:
    config = fast_config()
    session = ExpertSession(config)
    episodes = EpisodeController("t", "expert")
    assert session.tick(0.0, episodes.status, None).request_reset
    session.reset_done(1.0, True, "ok")
    old = KinematicWorld(config).observe(0.9)  # a frame from before the reset
    assert session.tick(5.0, episodes.status, old).event is None
    assert session.tick(5.0, episodes.status, KinematicWorld(config).observe(1.01)).event is Event.START


@pytest.mark.parametrize(
    ("position", "inside"),
    [((0.16, -0.27, 0.021), True), ((0.16, -0.27, 0.08), False), ((0.25, 0.10, 0.015), False),
     ((0.16 + 0.064, -0.27, 0.02), True), ((0.16 + 0.066, -0.27, 0.02), False)],
)
def test_in_bin(position, inside: bool) -> None:
    session = ExpertSession(ExpertSessionConfig())
    assert session.in_bin(ObjectPose("c", "red", np.array(position), QUAT, CUBE)) is inside


def test_bin_defaults_match_the_simulator() -> None:
    sim = SimConfig()
    config = teleop_config(default_values() | {"source": "expert"}).expert
    assert config.bin_center == sim.bin_center
    assert config.bin_inner_size == sim.bin_inner_size
    assert config.bin_wall_height == sim.bin_wall_height
    assert config.bin_floor_height == sim.bin_wall_thickness
