"""The VLA command lines end to end (subprocesses): train with --policy vla, export, the
quantization report, the in-process simulator evaluation, and the simulated dataset maker."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from armstack_policy.vla_tokens import ActionBins

torch = pytest.importorskip("torch", reason="training dependencies (requirements-train.txt)")

REPO = Path(__file__).resolve().parents[4]
TOOLS = REPO / "tools"
TINY = ["--set", "image_size=[32,32]", "--set", "stem_channels=[8,8]", "--set", "dim_model=32",
        "--set", "n_heads=2", "--set", "n_layers=1", "--set", "dim_feedforward=64",
        "--set", "chunk_size=2", "--set", "n_action_steps=1", "--set", "max_instruction_tokens=8"]


def _run(args: list, timeout: float = 150) -> subprocess.CompletedProcess:
    paths = [str(REPO / "ros2_ws/src" / p) for p in ("armstack_learning", "armstack_recorder",
                                                     "armstack_policy", "armstack_common",
                                                     "armstack_sim")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths + sys.path), "OMP_NUM_THREADS": "1",
           "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    return subprocess.run([sys.executable, *map(str, args)], env=env, capture_output=True,
                          text=True, check=False, timeout=timeout)


@pytest.fixture(scope="module")
def vla_model(tmp_path_factory, vla_dataset_root) -> Path:
    """A VLA trained for 3 steps and exported by the command lines."""
    tmp = tmp_path_factory.mktemp("vla_cli")
    done = _run([TOOLS / "train_policy.py", "--policy", "vla", "--dataset", vla_dataset_root,
                 "--cameras", "color", "--action-kind", "ee", "--steps", "3", "--out",
                 tmp / "run", "--batch-size", "4", "--log-every", "1", *TINY])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "step 3:" in done.stderr and "token_accuracy" in done.stderr
    done = _run([TOOLS / "export_policy.py", "--run", tmp / "run", "--out", tmp / "model"])
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / "model"


def test_train_and_export_make_a_vla_with_its_card(vla_model):
    card = json.loads((vla_model / "model_card.json").read_text())
    assert card["policy"]["kind"] == "vla" and card["parity"]["passed"]
    assert card["parity"]["tokens_identical"] and card["action"]["kind"] == "ee"
    assert card["vla"]["tokenizer"]["words"] == ["bin", "blue", "cube", "in", "put", "red", "the"]
    for name in ("policy.onnx", "policy_step.onnx", "MODEL_CARD.md"):
        assert (vla_model / name).is_file()


def _tool(name: str):  # noqa: ANN202 - the tool's module
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


def test_quantization_report(vla_dataset_root, vla_model, capsys, monkeypatch, tmp_path):
    """In process (a subprocess would import torch again): the tool's own main."""
    tool = _tool("vla_quantization")
    monkeypatch.setattr(sys, "argv", ["vla_quantization.py", "--dataset", str(vla_dataset_root),
                                      "--json", str(tmp_path / "q.json")])
    assert tool.main() == 0
    assert "max error within half a bin in every dimension: True" in capsys.readouterr().out
    report = json.loads((tmp_path / "q.json").read_text())
    assert report["actions"] == 48 and report["names"][0] == "x"
    assert all(m <= h + 1e-6 for m, h in zip(report["max_abs_error"], report["half_bin"],
                                             strict=True))
    # the exported model's bins are the ones training built from this dataset
    names, actions = tool.dataset_actions(vla_dataset_root, "ee")
    card_bins = ActionBins.from_dict(json.loads((vla_model / "model_card.json").read_text())
                                     ["vla"]["actions"])
    assert np.allclose(card_bins.low, tool.dataset_bins(actions, 256).low)
    table, _ = tool.report(names, card_bins, actions)
    assert "  gripper " in table


def test_inprocess_evaluation_runs_an_episode(vla_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(vla_model, model)
    done = _run([TOOLS / "eval_vla_inprocess.py", "--model", model / "policy.onnx",
                 "--episodes", "1", "--time-limit", "0.5", "--json", tmp_path / "eval.json",
                 "--update-card", "--trace-dir", tmp_path / "traces"])
    assert done.returncode == 0, done.stderr[-3000:]
    from armstack_eval.trace import EpisodeTrace
    trace = EpisodeTrace.load(next((tmp_path / "traces").glob("episode_*.npz")))
    assert len(trace) == 5 and trace.object_names  # one row per 10 Hz control step
    assert np.isfinite(trace.table).all()  # a VLA commands the gripper at every step
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["summary"]["episodes"] == 1 and result["summary"]["inference_hz"] > 0
    episode = result["episodes"][0]
    assert episode["inferences"] == 5  # 0.5 s at the dataset's 10 Hz, one action per chunk
    assert episode["instruction"].startswith("put the ")
    assert not episode["success"]  # half a second is too short to put a cube in the bin
    card = json.loads((model / "model_card.json").read_text())
    assert card["evaluation"]["episodes"] == 1 and card["evaluation"]["success_rate"] == 0.0
    assert '"success_rate": 0.0' in (model / "MODEL_CARD.md").read_text()


def test_open_loop_check_runs_a_vla_on_its_recorded_frames(vla_model, vla_dataset_root):
    done = _run([TOOLS / "policy_open_loop.py", "--policy-model", vla_model / "policy.onnx",
                 "--dataset", vla_dataset_root, "--episodes", "0,1", "--stride", "2"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ee position error by chunk step" in done.stdout
    assert "grasp x/y error" in done.stdout or "chunks" in done.stdout


def test_open_loop_camera_frames_are_the_videos_as_the_policy_node_sees_them(vla_dataset_root):
    from armstack_policy.observation import image_feature
    from armstack_recorder.lerobot_dataset import LeRobotDatasetReader

    tool = _tool("policy_open_loop")
    reader = LeRobotDatasetReader(vla_dataset_root)
    timestamps = np.asarray(reader.episode_data(1)["timestamp"], np.float64).ravel()
    frames = tool.CameraFrames(reader, 1, timestamps, (("color", 16, 24),))
    got = frames.history(1, 3)["observation.images.color"]  # frames 0, 0, 1: history clipped
    raw = reader.decode_video(1, "observation.images.color", timestamps[[0, 1]])
    assert got.shape == (3, 3, 16, 24)
    np.testing.assert_array_equal(got[0], image_feature(raw[0], (16, 24)))
    np.testing.assert_array_equal(got[1], got[0])
    np.testing.assert_array_equal(got[2], image_feature(raw[1], (16, 24)))
    assert got[0].std() > 0.01  # the squares are in it
    # another episode, another picture (the frames of one episode are alike)
    other = tool.CameraFrames(reader, 2, timestamps, (("color", 16, 24),)).history(1, 1)
    assert not np.array_equal(other["observation.images.color"][0], got[2])


def test_dataset_maker_writes_language_conditioned_episodes(tmp_path):
    done = _run([TOOLS / "make_vla_dataset.py", "--out", tmp_path / "ds", "--episodes", "1",
                 "--seed", "3", "--image-size", "48,64", "--time-limit", "20"], timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "kept 1/1" in done.stdout
    info = json.loads((tmp_path / "ds" / "meta" / "info.json").read_text())
    assert info["features"]["observation.images.color"]["shape"] == [48, 64, 3]
    assert info["features"]["action"]["names"][:3] == ["x", "y", "z"]
    assert info["total_episodes"] == 1 and info["total_tasks"] == 1


def test_stored_frames_match_live_frames_after_decoding(tmp_path):
    """What a VLA trains on (a stored frame, decoded and shrunk) must be what the policy node
    feeds it (the live frame shrunk): the dataset maker stores frames at the camera's size for
    that, because video halves the colour resolution and the cubes are a few pixels wide."""
    from armstack_learning.data import resize_frames
    from armstack_policy.observation import image_feature
    from armstack_recorder.lerobot_dataset import LeRobotDatasetReader
    from armstack_recorder.video import VideoConfig

    maker = _tool("make_vla_dataset")
    world = maker.SimWorld(maker.SimConfig())
    try:
        live = []
        for seed in range(6):
            world.reset(seed)
            live.append(world.render_rgbd()[0].copy())
        names = world.object_names
    finally:
        world.close()
    network = (96, 128)  # the VLA's default input
    errors = {}
    for size in (live[0].shape[:2], network):
        root = tmp_path / f"{size[0]}x{size[1]}"
        with maker.open_writer(root, 30, size, names, VideoConfig(codec="libx264", crf=18)) as w:
            w.start_episode("put the red cube in the bin")
            for rgb in live:
                w.add_frame(np.zeros(7, np.float32), np.zeros(8, np.float32),
                            np.zeros(3 * 4, np.float32),
                            {maker.CAMERA: resize_frames(rgb[None], size)[0]})
            w.save_episode()
        reader = LeRobotDatasetReader(root)
        times = np.asarray(reader.episode_data(0)["timestamp"])
        trained = resize_frames(reader.decode_video(0, "observation.images." + maker.CAMERA, times),
                                network).astype(np.float32) / 255.0
        fed = np.stack([image_feature(rgb, network).transpose(1, 2, 0) for rgb in live])
        errors[size] = np.abs(trained - fed)
        print(f"frames stored at {size[0]}x{size[1]}: per-pixel error against the live frame "
              f"p99 {np.percentile(errors[size], 99):.3f}, max {errors[size].max():.3f}")
    stored_full = errors[live[0].shape[:2]]
    assert np.percentile(stored_full, 99) < 0.03 and stored_full.max() < 0.25
    # Stored at the network's size, the smeared colours are far off: the check can tell.
    assert np.percentile(errors[network], 99) > 0.05


def test_object_token_vla_trains_exports_and_is_evaluated_with_perception(
        vla_dataset_root, tmp_path):
    """--objects gives the VLA object tokens; the evaluation feeds them from the detector and
    localization running on the simulator's frames."""
    done = _run([TOOLS / "train_policy.py", "--policy", "vla", "--dataset", vla_dataset_root,
                 "--cameras", "color", "--action-kind", "ee", "--objects", "red_cube,blue_cube",
                 "--object-hold", "0.5", "--steps", "2", "--out", tmp_path / "run",
                 "--batch-size", "4", *TINY])
    assert done.returncode == 0, done.stderr[-3000:]
    done = _run([TOOLS / "export_policy.py", "--run", tmp_path / "run", "--out",
                 tmp_path / "model"])
    assert done.returncode == 0, done.stderr[-3000:]
    card = json.loads((tmp_path / "model" / "model_card.json").read_text())
    assert card["observation"]["observation.environment_state"]["classes"] == ["red_cube",
                                                                                "blue_cube"]
    assert card["parity"]["passed"]
    done = _run([TOOLS / "eval_vla_inprocess.py", "--model", tmp_path / "model" / "policy.onnx",
                 "--episodes", "1", "--time-limit", "0.3", "--json", tmp_path / "eval.json"])
    assert done.returncode == 0, done.stderr[-3000:]
    episode = json.loads((tmp_path / "eval.json").read_text())["episodes"][0]
    assert episode["inferences"] == 3


def test_object_slots_in_the_evaluation_come_from_perception(monkeypatch):
    """After a second of frames, the detector and localization on the rendered RGB-D frames put
    each cube's slot within a centimetre of where the simulator has it."""
    from armstack_common.paths import resolve_model
    from armstack_eval.inprocess import Perception
    from armstack_sim.world import SimWorld

    monkeypatch.syspath_prepend(str(TOOLS))  # the tool imports make_vla_dataset beside it
    tool = _tool("eval_vla_inprocess")
    card = SimpleNamespace(object_classes=("red_cube", "green_cube", "blue_cube"),
                           object_fields=("x", "y", "z", "present"), object_hold=0.5)
    world = SimWorld()
    try:
        world.reset(7)
        detector = resolve_model("detector/detector.onnx", made_by="tools/train_detector.py")
        source = tool.ObjectSlotSource(world, card, Perception(world, detector))
        source.reset()
        for i in range(30):  # 1 s at 30 Hz
            world.step(max(1, round(1 / 30 / world.timestep)))
            source.frame(i / 30)
        slots = source.slots.reshape(3, 4)
        truth = {p.name: np.asarray(p.position) for p in world.object_poses()}
        for i, name in enumerate(card.object_classes):
            assert slots[i, 3] == 1.0, (name, slots)
            assert np.linalg.norm(slots[i, :3] - truth[name]) < 0.01, (name, slots[i], truth[name])
    finally:
        world.close()
