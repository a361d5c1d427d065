"""Episode traces and the grasps read from them: synthetic traces for the rules, and the
scripted expert's deliberate miss and retry in real MuJoCo physics."""

from __future__ import annotations

import numpy as np
import pytest
from armstack_common.kinematics import ArmKinematics
from armstack_common.paths import urdf_path
from armstack_eval.trace import EpisodeTrace, Grasp, GraspRules, find_grasps, grasp_bias
from armstack_sim.expert import ExpertConfig, run_episode
from armstack_sim.world import SimWorld, inside_bin

NAMES = ("red_cube", "blue_cube")
DT = 0.02


def _trace(ee: np.ndarray, gripper: np.ndarray, cubes: np.ndarray) -> EpisodeTrace:
    """ee (T, 3), gripper (T,), cubes (T, 2, 3)."""
    trace = EpisodeTrace(NAMES)
    for k in range(len(ee)):
        trace.add(k * DT, ee[k], gripper[k], cubes[k])
    return trace


def _scene(steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ee = np.tile([0.25, 0.0, 0.023], (steps, 1))
    gripper = np.full(steps, 0.034)
    cubes = np.tile([[0.25, 0.006, 0.015], [0.30, 0.10, 0.015]], (steps, 1, 1))
    return ee, gripper, cubes


def test_a_close_beside_a_cube_that_comes_up_with_the_gripper_is_a_lift() -> None:
    ee, gripper, cubes = _scene(200)
    gripper[50:] = 0.0  # closed at step 50 (t 1.0 s), 6 mm from red
    ee[100:, 2] = 0.16  # lifted at 2.0 s, red with it
    cubes[100:, 0] = ee[100:] - [0.0, 0.006, 0.008]
    grasps = find_grasps(_trace(ee, gripper, cubes))
    assert len(grasps) == 1
    grasp = grasps[0]
    assert grasp.time == pytest.approx(1.0) and grasp.nearest == "red_cube"
    assert grasp.offset == pytest.approx(0.006) and grasp.lifted == "red_cube"
    assert grasp.release is None  # carried to the end
    assert "0.6 cm from red_cube; lifted red_cube, still held at the end" in grasp.describe()


def _carry(steps: int, release_step: int, fall_to: tuple[float, float]) -> EpisodeTrace:
    """Red picked at step 50, lifted at 100, carried towards (0.10, -0.30); at `release_step`
    it leaves the gripper and lands at `fall_to` by the next step."""
    ee, gripper, cubes = _scene(steps)
    gripper[50:] = 0.0
    ee[100:, 2] = 0.16
    ee[150:, :2] = [0.10, -0.30]
    cubes[100:release_step, 0] = ee[100:release_step] - [0.0, 0.0, 0.01]
    cubes[release_step:, 0] = [*fall_to, 0.015]
    return _trace(ee, gripper, cubes)


def test_a_lifted_cube_is_followed_to_where_it_left_the_gripper_and_came_to_rest() -> None:
    def in_bin(position: np.ndarray) -> bool:  # a 10 cm bin where the carry ends
        return inside_bin(position, (0.10, -0.30), inner_size=0.10, wall_height=0.05)

    into_bin = find_grasps(_carry(300, 200, (0.11, -0.29)), in_bin=in_bin)[0].release
    assert into_bin is not None and into_bin.in_bin
    assert into_bin.time == pytest.approx(4.0) and into_bin.rest == (0.11, -0.29, 0.015)
    dropped = find_grasps(_carry(300, 120, (0.24, 0.02)), in_bin=in_bin)[0]
    assert dropped.release.time == pytest.approx(2.4) and dropped.release.in_bin is False
    assert dropped.release.position[:2] == pytest.approx((0.24, 0.02))
    assert ("lifted red_cube, let go at t  2.40 s, 2 cm up over (0.240, 0.020); came to rest at "
            "(0.240, 0.020), outside the bin") in dropped.describe()
    # Without a bin test the place is given, not judged.
    unjudged = find_grasps(_carry(300, 200, (0.11, -0.29)))[0]
    assert unjudged.release.in_bin is None and "bin" not in unjudged.describe()


def test_a_close_that_lifts_nothing_and_a_cube_knocked_away_are_no_lift() -> None:
    ee, gripper, cubes = _scene(300)
    ee[:, 0] = 0.275  # 2.5 cm beside red
    gripper[50:100] = 0.0  # first close; the gripper opens again
    gripper[150:] = 0.0  # second close
    ee[100:, 2] = 0.16  # goes up empty
    cubes[160:, 1, 2] = 0.10  # blue flies up, but nowhere near the gripper
    grasps = find_grasps(_trace(ee, gripper, cubes))
    assert [g.time for g in grasps] == pytest.approx([1.0, 3.0])
    assert [g.nearest for g in grasps] == ["red_cube", "red_cube"]
    assert grasps[0].offset == pytest.approx(np.hypot(0.025, 0.006))
    assert [g.lifted for g in grasps] == [None, None]


def test_a_close_that_shoves_a_cube_away_without_lifting_it_is_a_push() -> None:
    ee, gripper, cubes = _scene(300)
    ee[:, 0] = 0.275  # 2.5 cm beside red
    gripper[50:] = 0.0  # closed at 1.0 s
    cubes[60:, 0, :2] = [0.31, 0.02]  # the fingers shove red 6.2 cm away
    cubes[60:, 1, :2] += [0.005, 0.0]  # blue barely moves: no push
    cubes[250:, 1, :2] = [0.40, 0.10]  # blue moves after the lift window: not this close's
    (grasp,) = find_grasps(_trace(ee, gripper, cubes))
    assert grasp.lifted is None and [p.cube for p in grasp.pushed] == ["red_cube"]
    assert grasp.pushed[0].moved == pytest.approx(np.hypot(0.06, 0.014))
    assert grasp.pushed[0].to == pytest.approx((0.31, 0.02, 0.015))
    assert "lifted nothing; pushed red_cube 6.2 cm to (0.310, 0.020)" in grasp.describe()
    # A cube in the bin that moves (another one let go onto it) is not pushed.
    (grasp,) = find_grasps(_trace(ee, gripper, cubes),
                           in_bin=lambda c: inside_bin(c, (0.25, 0.006), 0.02, 0.05))
    assert grasp.pushed == ()
    # A lifted cube is carried, not pushed.
    ee, gripper, cubes = _scene(200)
    gripper[50:] = 0.0
    ee[100:] = [0.30, 0.05, 0.16]
    cubes[100:, 0] = ee[100:] - [0.0, 0.006, 0.008]
    (grasp,) = find_grasps(_trace(ee, gripper, cubes))
    assert grasp.lifted == "red_cube" and grasp.pushed == ()


def test_steps_without_a_command_are_not_closes_and_traces_round_trip(tmp_path) -> None:
    ee, gripper, cubes = _scene(20)
    gripper[:10] = np.nan  # the policy had not answered yet
    trace = _trace(ee, gripper, cubes)
    assert find_grasps(trace) == [] and find_grasps(EpisodeTrace(NAMES)) == []
    trace.save(tmp_path / "episode_7.npz")
    loaded = EpisodeTrace.load(tmp_path / "episode_7.npz")
    assert loaded.object_names == NAMES and len(loaded) == 20
    np.testing.assert_array_equal(loaded.table, trace.table)


def _grasp(cube_xy: tuple[float, float], miss_xy: np.ndarray, lifted: str | None) -> Grasp:
    ee = np.asarray(cube_xy) + miss_xy
    return Grasp(time=1.0, ee=(ee[0], ee[1], 0.02), nearest="red_cube",
                 cube=(cube_xy[0], cube_xy[1], 0.015), offset=float(np.linalg.norm(miss_xy)),
                 lifted=lifted)


def test_grasp_bias_recovers_a_pull_towards_the_centre() -> None:
    centre = np.array([0.26, 0.035])
    rng = np.random.default_rng(1)
    cubes = centre + rng.uniform(-0.09, 0.09, size=(40, 2))
    # Misses towards the centre, 15 % of the cube's distance from it in x, 30 % in y, plus 2 mm.
    grasps = [_grasp(tuple(c), np.array([-0.15, -0.30]) * (c - centre) + 0.002,
                     "red_cube" if k % 2 else None) for k, c in enumerate(cubes)]
    grasps.append(_grasp((0.2, 0.0), np.array([0.2, 0.0]), None))  # aimed at no cube: left out
    bias = grasp_bias(grasps, tuple(centre), aimed_within=0.06)
    assert bias.grasps == 40 and bias.lifted == 20
    assert bias.slope == pytest.approx((-0.15, -0.30), abs=1e-9)
    assert bias.bias == pytest.approx((0.002, 0.002), abs=1e-9)
    with pytest.raises(ValueError, match="at least 3 grasps"):
        grasp_bias(grasps[:2], tuple(centre))


def test_the_report_tool_reads_trace_directories(tmp_path) -> None:
    import subprocess
    import sys
    from pathlib import Path

    for seed, miss in ((1, 0.01), (2, 0.02), (3, 0.03)):
        ee, gripper, cubes = _scene(100)
        ee[:, 0] += miss
        gripper[50:] = 0.0
        _trace(ee, gripper, cubes).save(tmp_path / f"episode_{seed}.npz")
    tool = Path(__file__).resolve().parents[4] / "tools" / "grasp_report.py"
    run = subprocess.run([sys.executable, str(tool), str(tmp_path)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "3 episodes, 3 closes; 3 within 6 cm of a cube, 0 of them lifted it" in run.stdout
    assert "median 2.1 cm" in run.stdout  # hypot(0.02, 0.006)
    # one close per episode, 1.2, 2.1 and 3.1 cm off
    assert "first close of each episode (3 of 3 closed): median 2.1 cm, p90 2.9 cm" in run.stdout
    assert "; 1 within 1.5 cm" in run.stdout
    assert "0 closes pushed a cube without lifting it (0 pushes); 0 left" in run.stdout
    pushed = tmp_path / "pushed"
    pushed.mkdir()
    for seed, to in ((1, (0.36, 0.0)), (2, (0.30, 0.0)), (3, (0.25, 0.006))):
        ee, gripper, cubes = _scene(100)
        ee[:, 0] += 0.02
        gripper[50:] = 0.0
        cubes[60:, 0, :2] = to  # pushed out of the area, pushed within it, not pushed
        _trace(ee, gripper, cubes).save(pushed / f"episode_{seed}.npz")
    run = subprocess.run([sys.executable, str(tool), str(pushed)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert ("2 closes pushed a cube without lifting it (2 pushes, 8.0 cm median); 1 left the "
            "cube off the layouts' area (x 0.17..0.35, y -0.13..0.2 m)") in run.stdout
    # Lifts, judged by the simulator's bin (centre (0.16, -0.27), opening 13 cm).
    lifts = tmp_path / "lifts"
    lifts.mkdir()
    _carry(300, 200, (0.16, -0.27)).save(lifts / "episode_1.npz")
    _carry(300, 120, (0.24, 0.02)).save(lifts / "episode_2.npz")
    _carry(300, 120, (0.24, 0.02)).save(lifts / "episode_3.npz")  # the bias needs three
    run = subprocess.run([sys.executable, str(tool), str(lifts)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "3 lifts: 1 let go into the bin, 2 came to rest outside it" in run.stdout
    empty = subprocess.run([sys.executable, str(tool), str(tmp_path / "none")],
                           capture_output=True, text=True, timeout=60)
    assert empty.returncode == 2 and "--trace-dir" in empty.stderr


def test_grasp_rules_name_the_bad_field() -> None:
    with pytest.raises(ValueError, match="GraspRules.lift_window"):
        GraspRules(lift_window=0.0)


def test_the_experts_deliberate_miss_then_its_grasp_in_real_physics() -> None:
    """The expert misses blue on purpose (2.5 cm beside it), then picks it: the trace shows a
    close ~2.5 cm off that lifts nothing, then one within a few mm that lifts blue."""
    world = SimWorld()
    try:
        trace = EpisodeTrace(world.object_names)
        config = ExpertConfig(grasp_yaw="azimuth", miss_rate=1.0, close_time=0.5)
        result = run_episode(world, ArmKinematics(urdf_path()), 4, config, control_period=DT,
                             time_limit=20.0, objects=["blue_cube"],
                             on_command=lambda w, action: trace.add_world(w.time, w,
                                                                          action.gripper))
    finally:
        world.close()
    assert result.success and not result.in_bin["red_cube"] and result.ik_failures == 0
    grasps = find_grasps(trace)
    assert [g.nearest for g in grasps] == ["blue_cube", "blue_cube"]
    assert grasps[0].offset == pytest.approx(0.025, abs=0.006) and grasps[0].lifted is None
    assert grasps[1].offset < 0.006 and grasps[1].lifted == "blue_cube"
