"""The episode sequence against a scripted stand-in for the graph (simulated clock)."""

from __future__ import annotations

import pytest

from armstack_eval.episode import EpisodeLog
from armstack_eval.episodes import (
    EpisodeSequence,
    RunnerConfig,
    RunnerError,
    TaskSnapshot,
    TeleopSnapshot,
    named_cube,
)


class FakeGraph:
    """sim/reset starts a new scene; the scene is solved `solve_after` s after the controller
    starts (None: never). The expert's takes start `take_delay` s after the previous ended."""

    def __init__(self, solve_after: list[float | None], expert: bool = False, take_delay: float = 2.0,
                 take_length: float = 5.0, reach_after: float | None = 0.0) -> None:
        self.t = 1000.0
        self.calls: list[str] = []
        self.scene, self.solve_after = 0, list(solve_after)
        self.started_at: float | None = None
        self.expert, self.take_delay, self.take_length = expert, take_delay, take_length
        self.take, self.take_start, self.next_take = 0, 0.0, self.t + take_delay
        self.faulted = False
        self.filmed: list[int] = []
        self.instructions: list[tuple[str, str]] = []  # (text, the service called last)
        self.start_pose: list[tuple[float, str, tuple]] = []  # (time, last call, positions)
        # The arm is at the commanded start pose this long after sim/reset (None: never).
        self.reach_after, self.reset_at = reach_after, self.t

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds
        if self.expert:
            self._expert_step()

    def _expert_step(self) -> None:
        recording = self.take_start > 0 and self.t < self.take_start + self.take_length
        if not recording and self.take_start > 0 and self.started_at is not None:
            self.started_at, self.next_take = None, self.t + self.take_delay  # take ended
            self.solve_after.pop(0)
        if self.started_at is None and self.t >= self.next_take and self.solve_after:
            self.scene += 1
            self.take += 1
            self.take_start = self.started_at = self.t

    def alive(self) -> bool:
        return True

    def call(self, service: str, timeout: float) -> tuple[bool, str]:
        self.calls.append(service)
        if service == "sim/reset":
            self.scene += 1
            self.started_at = None
            self.reset_at = self.t
        elif service == "policy/start":
            self.started_at = self.t
        elif service == "policy/stop":
            if self.started_at is not None:
                self.solve_after.pop(0)
            self.started_at = None
        return True, "ok"

    def task_status(self) -> TaskSnapshot:
        solved = (self.started_at is not None and self.solve_after and self.solve_after[0] is not None
                  and self.t - self.started_at >= self.solve_after[0])
        return TaskSnapshot(scene=self.scene, seed=100 + self.scene, in_bin={"red_cube": bool(solved)},
                            success=bool(solved), sim_time=0.0, stamp=self.t)

    def teleop_status(self) -> TeleopSnapshot:
        recording = self.started_at is not None
        return TeleopSnapshot("recording" if recording else "idle", self.take, self.take_start)

    def driver_faulted(self) -> bool:
        return self.faulted

    def joint_positions(self, names: tuple[str, ...]) -> tuple[float, ...] | None:
        if not self.start_pose:
            return None
        reached = self.reach_after is not None and self.t - self.reset_at >= self.reach_after
        return tuple(self.start_pose[-1][2][n] + (0.0 if reached else 0.5) for n in names)

    def command_joints(self, names: tuple[str, ...], positions: tuple[float, ...]) -> None:
        self.start_pose.append((self.t, self.calls[-1], dict(zip(names, positions, strict=True))))

    def instruct(self, text: str) -> None:
        self.instructions.append((text, self.calls[-1]))

    def episode_started(self, index: int, seed: int | None) -> None:
        self.filmed.append(index)

    def episode_ended(self) -> None:
        pass


def _run(graph: FakeGraph, **cfg):
    log = EpisodeLog()
    lines: list[str] = []
    results, traces = EpisodeSequence(graph, log, RunnerConfig(**cfg), progress=lines.append).run()
    return results, lines


def test_policy_episodes_reset_start_and_stop_in_order():
    graph = FakeGraph([3.0, None, 7.5])
    results, lines = _run(graph, controller="policy", episodes=3, timeout=20.0, settle=1.0)
    assert graph.calls[:5] == ["policy/stop", "sim/reset", "policy/reset", "policy/start", "policy/stop"]
    assert graph.calls.count("sim/reset") == 3
    assert [r.success for r in results] == [True, False, True]
    assert [r.end_reason for r in results] == ["success", "timeout", "success"]
    assert results[0].time_to_success_s == pytest.approx(3.0, abs=0.06)
    assert results[1].duration_s == pytest.approx(20.0, abs=0.06)
    assert results[2].time_to_success_s == pytest.approx(7.5, abs=0.06)
    assert [r.seed for r in results] == [101, 102, 103]
    assert results[0].in_bin == {"red_cube": True}
    assert "episode 1/3: success in 3.0 s; in the bin: 1/1" in lines


def test_the_start_pose_is_commanded_between_the_reset_and_the_policy_start():
    graph = FakeGraph([3.0, 4.0])
    _run(graph, controller="policy", episodes=2, timeout=20.0, settle=1.0,
         start_joints=("waist", "left_finger"), start_positions=(0.0, 0.035))
    assert {call for _, call, _ in graph.start_pose} == {"sim/reset"}  # after it, before reset
    assert graph.start_pose[0][2] == {"waist": 0.0, "left_finger": 0.035}
    first = [t for t, _, _ in graph.start_pose if t < 1001.5]  # the first episode's settle
    assert len(first) == pytest.approx(1.0 / 0.02, abs=2)  # every 20 ms through the settle
    with pytest.raises(ValueError, match="start_positions"):
        RunnerConfig(start_joints=("waist",), start_positions=())


def test_the_policy_starts_once_the_arm_is_at_the_start_pose():
    pose = {"start_joints": ("waist", "left_finger"), "start_positions": (0.0, 0.035)}
    graph = FakeGraph([3.0], reach_after=2.5)  # longer than the settle
    _run(graph, controller="policy", episodes=1, timeout=20.0, settle=1.0, **pose)
    reset = graph.start_pose[0][0]
    assert graph.start_pose[-1][0] - reset == pytest.approx(2.5, abs=0.05)
    with pytest.raises(RunnerError, match=r"did not reach the start pose within 3 s of sim/reset: "
                                          r"waist \+0.500, left_finger \+0.500"):
        _run(FakeGraph([3.0], reach_after=None), controller="policy", episodes=1, timeout=20.0,
             settle=1.0, start_timeout=2.0, **pose)


def test_expert_episodes_follow_the_takes_and_end_the_session():
    graph = FakeGraph([2.0, None], expert=True, take_length=6.0)
    results, _ = _run(graph, controller="expert", episodes=2, timeout=30.0)
    assert [r.success for r in results] == [True, False]
    assert [r.end_reason for r in results] == ["success", "controller_finished"]
    assert results[0].time_to_success_s == pytest.approx(2.0, abs=0.06)
    assert results[0].duration_s == pytest.approx(6.0, abs=0.06)  # the runner waits for the take's end
    assert "sim/reset" not in graph.calls and "policy/start" not in graph.calls
    assert graph.calls[-1] == "teleop/end_session"


def test_expert_take_beyond_the_timeout_is_discarded():
    graph = FakeGraph([None], expert=True, take_length=100.0)
    results, _ = _run(graph, controller="expert", episodes=1, timeout=10.0)
    assert results[0].end_reason == "timeout"
    assert graph.calls == ["teleop/discard_episode", "teleop/end_session"]


def test_a_faulted_driver_is_enabled_again_after_the_episode():
    graph = FakeGraph([1.0])
    graph.faulted = True
    _run(graph, controller="policy", episodes=1, timeout=5.0)
    assert graph.calls[-1] == "driver/enable"


def test_a_missing_service_stops_the_run_with_its_name():
    graph = FakeGraph([1.0])
    graph.call = lambda service, timeout: (False, f"{service} is not available")
    with pytest.raises(RunnerError, match="policy/stop failed: policy/stop is not available"):
        _run(graph, controller="policy", episodes=1)


class ThreeCubeGraph(FakeGraph):
    """Three cubes; once solved, the cubes of `placed` (per episode) are in the bin."""

    CUBES = ("red_cube", "green_cube", "blue_cube")

    def __init__(self, solve_after: list[float | None], placed: list[tuple[str, ...]]) -> None:
        super().__init__(solve_after)
        self.placed = list(placed)

    def call(self, service: str, timeout: float) -> tuple[bool, str]:
        if service == "policy/stop" and self.started_at is not None:
            self.placed.pop(0)
        return super().call(service, timeout)

    def task_status(self) -> TaskSnapshot:
        solved = super().task_status().success
        in_bin = {c: solved and c in self.placed[0] for c in self.CUBES} if self.placed else {}
        return TaskSnapshot(scene=self.scene, seed=100 + self.scene, in_bin=in_bin,
                            success=bool(in_bin) and all(in_bin.values()), sim_time=0.0,
                            stamp=self.t)


def test_instructed_episodes_name_a_cube_and_succeed_on_it_alone():
    """A VLA's episodes: the instruction goes out after the reset (while the arm settles),
    names the cube drawn with the scene's seed, and only that cube alone in the bin counts."""
    targets = [named_cube(list(ThreeCubeGraph.CUBES), 101 + i) for i in range(3)]
    others = [next(c for c in ThreeCubeGraph.CUBES if c != t) for t in targets]
    graph = ThreeCubeGraph([2.0, 2.0, 2.0], [(targets[0],), (others[1],), (targets[2], others[2])])
    results, lines = _run(graph, controller="policy", episodes=3, timeout=10.0, settle=1.0,
                          instruction_template="put the {color} cube in the bin")
    texts = [f"put the {t.split('_')[0]} cube in the bin" for t in targets]
    assert graph.instructions == [(text, "sim/reset") for text in texts]
    assert [r.target for r in results] == targets and [r.instruction for r in results] == texts
    # the named cube alone; another cube instead; the named cube and another one
    assert [r.success for r in results] == [True, False, False]
    assert results[0].time_to_success_s == pytest.approx(2.0, abs=0.06)
    assert f"episode 1/3: started (scene 1, seed 101): {texts[0]!r}" in lines
    assert len({named_cube(list(ThreeCubeGraph.CUBES), seed) for seed in range(20)}) == 3


@pytest.mark.parametrize("overrides, field", [
    ({"controller": "keyboard"}, "controller"), ({"episodes": 0}, "episodes"),
    ({"timeout": 0.0}, "timeout"), ({"settle": -1.0}, "settle"),
    ({"instruction_template": "put the cube in the bin"}, "instruction_template"),
    ({"controller": "expert", "instruction_template": "the {color} one"}, "instruction_template"),
])
def test_config_errors_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        RunnerConfig(**overrides)


def test_policy_episodes_start_at_the_experts_rest_pose_by_default():
    """Where the recorded expert demonstrations start: the top-down pose at the expert's
    home_position, gripper open; an explicit pose must name every joint."""
    import numpy as np
    from armstack_common.kinematics import ArmKinematics
    from armstack_common.paths import urdf_path
    from armstack_eval.episodes import sim_start_pose
    from armstack_sim.expert import ExpertConfig
    from armstack_sim.world import ACTUATED_JOINTS

    fields = sim_start_pose()
    assert fields["start_joints"] == tuple(ACTUATED_JOINTS)
    q = np.array(fields["start_positions"])
    expert = ExpertConfig()
    pose = ArmKinematics(urdf_path()).fk(q[:-1])
    np.testing.assert_allclose(pose[:3, 3], expert.home_position, atol=1e-3)
    np.testing.assert_allclose(pose[:3, 0], [0.0, 0.0, -1.0], atol=1e-3)  # pointing down
    assert q[-1] == expert.gripper_open
    assert sim_start_pose((0.1,) * 7)["start_positions"] == (0.1,) * 7
    with pytest.raises(ValueError, match="needs 7 values"):
        sim_start_pose((0.0, 1.0))
