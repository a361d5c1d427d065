"""ONNX export: parity with torch, model card contents, metadata, the runtime's sampling path."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training dependencies (requirements-train.txt)")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from armstack_learning.data import dataset_fingerprint  # noqa: E402
from armstack_learning.export import (  # noqa: E402
    METADATA_CARD_KEY,
    check_parity,
    export_checkpoint,
    export_onnx,
    md_training,
)
from armstack_learning.factory import policy_from_checkpoint  # noqa: E402
from armstack_learning.train import TrainConfig, train  # noqa: E402
from armstack_policy.ddim import DDIMSampler, NoiseSchedule, alphas_cumprod  # noqa: E402


def _train(tmp_path_factory, dataset_root, layout, kind, cfg, **train_kwargs):
    out = tmp_path_factory.mktemp(kind)
    tc = TrainConfig(policy=kind, dataset=str(dataset_root), out=str(out / "run"), steps=3,
                     batch_size=4, save_every=3, log_every=1, **train_kwargs)
    return train(tc, cfg, layout), out


@pytest.fixture(scope="module")
def act_export(tmp_path_factory, dataset_root, layout, tiny_act_config):
    ckpt, out = _train(tmp_path_factory, dataset_root, layout, "act", tiny_act_config())
    return export_checkpoint(ckpt, out / "model"), ckpt


@pytest.fixture(scope="module")
def diffusion_export(tmp_path_factory, dataset_root, layout, tiny_diffusion_config):
    ckpt, out = _train(tmp_path_factory, dataset_root, layout, "diffusion",
                       tiny_diffusion_config(), ema=True)
    return export_checkpoint(ckpt, out / "model"), ckpt


def _dataset_obs(ds, indices, keys):
    items = [ds[i] for i in indices]
    return {k: np.stack([it[k].numpy() for it in items]) for k in keys}


def test_act_graph_matches_torch_in_raw_units(act_export, make_dataset):
    result, ckpt = act_export
    parity = result.card["parity"]
    assert parity["passed"] and parity["action_chunk_max_abs_error"] <= 1e-4
    policy, _ = policy_from_checkpoint(ckpt)
    sess = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["observation.state",
                                                   "observation.environment_state"]
    assert sess.get_inputs()[0].shape == ["batch", 1, 7]
    assert sess.get_outputs()[0].name == "action"
    ds = make_dataset(1, 10)
    for indices in ([5], [0, 41, 90]):  # the batch axis is dynamic
        obs = _dataset_obs(ds, indices, policy.layout.input_keys)
        got = sess.run(["action"], obs)[0]
        with torch.no_grad():
            want = policy.predict_chunk({k: torch.from_numpy(v) for k, v in obs.items()}).numpy()
        assert got.shape == (len(indices), 10, 7)
        assert np.max(np.abs(got - want)) <= 1e-4


def test_act_card(act_export, dataset_root):
    result, _ = act_export
    card = json.loads(result.card_path.read_text())
    assert card == json.loads(json.dumps(result.card))
    assert card["policy"]["kind"] == "act" and card["policy"]["config"]["chunk_size"] == 10
    assert card["control"] == {**card["control"], "fps": 50, "chunk_size": 10, "n_obs_steps": 1}
    assert card["action"]["kind"] == "joint" and card["action"]["topic"] == "joint_command"
    assert card["action"]["units"] == ["rad"] * 6 + ["m"]
    env = card["observation"]["observation.environment_state"]
    assert env["frame"] == "base_link"
    assert env["names"][:4] == ["red_cube_x", "red_cube_y", "red_cube_z", "red_cube_present"]
    assert env["classes"] == ["red_cube", "green_cube", "blue_cube"] and env["hold_s"] == 0.0
    norm = card["normalization"]["features"]
    assert set(norm) == {"observation.state", "observation.environment_state", "action"}
    assert card["normalization"]["config"]["action"] == "mean_std"
    assert card["dataset"]["sha256"] == dataset_fingerprint(dataset_root)
    assert card["dataset"]["episodes"] == 3 and card["training"]["steps"] == 3
    assert card["training"]["init"] is None
    assert card["evaluation"] is None
    meta = {p.key: p.value for p in onnx.load(str(result.onnx_path)).metadata_props}
    assert json.loads(meta[METADATA_CARD_KEY])["normalization"] == card["normalization"]
    assert onnx.load(str(result.onnx_path)).opset_import[0].version >= 17
    md = (result.card_path.parent / "MODEL_CARD.md").read_text()
    assert "joint_command" in md and "red_cube_present [flag]" in md and card["dataset"]["sha256"] in md


def test_card_names_the_checkpoint_a_fine_tune_started_from():
    card = {"training": {"steps": 500, "weights": "raw",
                         "init": {"path": "/runs/a/step_9.pt", "step": 9, "steps_before": 9}}}
    assert md_training(card) == ("- 500 training steps, raw weights; the run started from the "
                                 "weights of `/runs/a/step_9.pt` (step 9), 9 steps before this "
                                 "run in all")
    assert md_training({"training": {**card["training"], "init": None}}) == (
        "- 500 training steps, raw weights")


def test_diffusion_denoiser_and_ddim_parity(diffusion_export):
    result, _ = diffusion_export
    parity = result.card["parity"]
    assert parity["passed"]
    assert parity["denoiser_max_abs_error"] <= 1e-4 and parity["ddim_sample_max_abs_error"] <= 1e-4
    assert result.card["training"]["weights"] == "ema"
    # The card says how actions were normalized: min/max (diffusion samples in [-1, 1]), not
    # the run's configured mode, which diffusion overrides.
    assert result.card["training"]["config"]["normalization"]["action"] == "mean_std"
    assert result.card["normalization"]["config"]["action"] == "min_max"


def test_runtime_path_from_card_alone(diffusion_export, make_dataset):
    """What the policy node does: schedule and unnormalization from the card, NumPy DDIM with
    the ONNX denoiser; equals the torch policy's chunk for the same noise."""
    result, ckpt = diffusion_export
    card = json.loads(result.card_path.read_text())
    diff = card["diffusion"]
    schedule = NoiseSchedule.from_dict(diff)
    np.testing.assert_allclose(diff["alphas_cumprod"], alphas_cumprod(schedule), rtol=1e-6)
    meta = {p.key: p.value for p in onnx.load(str(result.onnx_path)).metadata_props}
    assert json.loads(meta["action_offset"]) == diff["unnormalize"]["offset"]
    sess = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    policy, _ = policy_from_checkpoint(ckpt)
    obs = _dataset_obs(make_dataset(2, 8), [7, 77], policy.layout.input_keys)
    noise = np.random.default_rng(5).standard_normal((2, 8, 7)).astype(np.float32)
    sampler = DDIMSampler(schedule, diff["num_inference_steps"], diff["timestep_spacing"])

    def denoise(x, t):
        return sess.run(["eps"], {"x_t": x, "timestep": np.full(2, t, np.int64), **obs})[0]

    x0 = sampler.sample(denoise, noise)
    got = x0 * np.array(diff["unnormalize"]["scale"]) + np.array(diff["unnormalize"]["offset"])
    with torch.no_grad():
        want = policy.predict_chunk({k: torch.from_numpy(v) for k, v in obs.items()},
                                    noise=torch.from_numpy(noise)).numpy()
    assert np.max(np.abs(got - want)) <= 1e-4
    md = (result.card_path.parent / "MODEL_CARD.md").read_text()
    assert "DDIM" in md and "normalized action space" in md


def test_card_carries_the_runtime_default_of_diffusion_samples(diffusion_export, act_export,
                                                              tmp_path):
    from armstack_policy.onnx_policy import RunnerConfig, load_policy

    result, ckpt = diffusion_export
    assert result.card["diffusion"]["samples"] == 1
    four = export_checkpoint(ckpt, tmp_path / "four", diffusion_samples=4)
    assert four.card["diffusion"]["samples"] == 4
    assert "4 chunks sampled per observation" in (tmp_path / "four" / "MODEL_CARD.md").read_text()
    assert load_policy(four.onnx_path, RunnerConfig()).samples == 4
    with pytest.raises(ValueError, match="diffusion_samples applies to diffusion policies"):
        export_checkpoint(act_export[1], tmp_path / "act", diffusion_samples=2)


def test_diffusion_waypoints_export_and_run_at_the_control_rate(tmp_path_factory, dataset_root,
                                                               layout, tiny_diffusion_config,
                                                               make_dataset):
    """A Diffusion Policy that denoises 4 waypoints 3 frames apart: the graph takes (4, D), the
    card says so, and the runtime's chunk is the torch policy's 10 interpolated frames."""
    from armstack_policy.onnx_policy import RunnerConfig, load_policy

    cfg = tiny_diffusion_config(horizon=4, action_stride=3, n_action_steps=6)
    ckpt, out = _train(tmp_path_factory, dataset_root, layout, "diffusion", cfg)
    result = export_checkpoint(ckpt, out / "model")
    card = result.card
    assert card["parity"]["passed"]
    assert card["control"]["chunk_size"] == 10 and card["control"]["n_action_steps"] == 6
    assert (card["diffusion"]["waypoints"], card["diffusion"]["stride"]) == (4, 3)
    assert [io["shape"] for io in card["onnx"]["inputs"] if io["name"] == "x_t"] == [["batch", 4, 7]]
    runner = load_policy(result.onnx_path, RunnerConfig(seed=11))
    policy, _ = policy_from_checkpoint(ckpt)
    obs = _dataset_obs(make_dataset(2, 8), [30], policy.layout.input_keys)
    chunk = runner.predict_chunk({k: v[0] for k, v in obs.items()})
    noise = np.random.default_rng(11).standard_normal((1, 4, 7)).astype(np.float32)
    with torch.no_grad():
        want = policy.predict_chunk({k: torch.from_numpy(v) for k, v in obs.items()},
                                    noise=torch.from_numpy(noise))[0].numpy()
    assert chunk.shape == want.shape == (10, 7)
    assert np.max(np.abs(chunk - want)) <= 1e-4
    # rows between waypoints 0 and 1 (rows 0 and 3) lie on the line between them
    np.testing.assert_allclose(chunk[1], chunk[0] + (chunk[3] - chunk[0]) / 3, atol=1e-6)
    md = (result.card_path.parent / "MODEL_CARD.md").read_text()
    assert "4 sampled actions are waypoints 3 control frames apart" in md


def test_parity_check_detects_a_different_model(tmp_path, make_policy, tiny_act_config):
    exported, _ = make_policy("act", tiny_act_config(), seed=0)
    other, _ = make_policy("act", tiny_act_config(), seed=1)
    path = tmp_path / "a.onnx"
    export_onnx(exported, path)
    assert check_parity(exported, path)["action_chunk_max_abs_error"] <= 1e-4
    assert check_parity(other.eval(), path)["action_chunk_max_abs_error"] > 1e-2


@pytest.mark.parametrize("kind, overrides", [
    ("act", {}), ("diffusion", {}),
    ("diffusion",
     {"object_encoder_layers": 1, "object_encoder_dim": 16, "object_encoder_heads": 2}),
])
def test_camera_policies_export_with_parity(tmp_path, kind, overrides, tiny_act_config,
                                            tiny_diffusion_config):
    from armstack_learning.factory import build_policy, placeholder_normalizer
    from armstack_learning.features import FeatureLayout

    layout = FeatureLayout(cameras=("top", "wrist"), image_size=(32, 48))
    cfg = tiny_act_config() if kind == "act" else tiny_diffusion_config(**overrides)
    torch.manual_seed(0)
    policy = build_policy(kind, cfg, layout, placeholder_normalizer(layout)).eval()
    path = tmp_path / "cam.onnx"
    export_onnx(policy, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    assert names[-2:] == ["observation.images.top", "observation.images.wrist"]
    assert sess.get_inputs()[-1].shape == ["batch", policy.n_obs_steps, 3, 32, 48]
    assert max(check_parity(policy, path).values()) <= 1e-4


def test_record_evaluation_from_graph_reports(act_export, tmp_path):
    """tools/record_evaluation.py: report summaries become the card's evaluation, in both the
    JSON card and MODEL_CARD.md; the card in the ONNX metadata stays as exported."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    result, _ = act_export
    model_dir = tmp_path / "model"
    shutil.copytree(result.card_path.parent, model_dir)
    reports = []
    for mode, wins in (("receding_horizon", 3), ("temporal_ensemble", 1)):
        report = tmp_path / mode
        report.mkdir()
        summary = {"episodes": 4, "successes": wins, "success_rate": wins / 4,
                   "end_reasons": {"success": wins, "timeout": 4 - wins},
                   "time_to_completion_s": {"median": 21.5},
                   "jerk_rms_rad_s3": {"median": 900.0},
                   "diagnostics": {"policy_control_jitter_ms_median": 0.5,
                                   "policy_control_jitter_ms_p99": 6.0,
                                   "policy_control_jitter_ms_max": 9.0},
                   "policy_missed_periods": {"count": 12.0, "minutes": 2.0, "per_minute": 6.0}}
        meta = {"chunk_mode": mode, "first_seed": 1000, "timeout_s": 40.0, "date": "2026-11-26"}
        (report / "summary.json").write_text(json.dumps({"meta": meta, "summary": summary}))
        reports.append(str(report))
    tool = Path(__file__).resolve().parents[4] / "tools" / "record_evaluation.py"
    onnx_path = model_dir / result.onnx_path.name
    done = subprocess.run([sys.executable, str(tool), "--model", str(onnx_path), *reports],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = json.loads((model_dir / "model_card.json").read_text())["evaluation"]["graph"]
    assert [(r["chunk_mode"], r["successes"], r["episodes"]) for r in rows] == \
        [("receding_horizon", 3, 4), ("temporal_ensemble", 1, 4)]
    assert rows[0]["policy_control_jitter_ms"] == {"median": 0.5, "p99": 6.0, "max": 9.0}
    assert rows[0]["policy_missed_periods_per_min"] == 6.0
    md = (model_dir / "MODEL_CARD.md").read_text()
    assert "Not evaluated yet" not in md and "temporal_ensemble" in md
    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert json.loads(meta[METADATA_CARD_KEY])["evaluation"] is None

    # --append keeps the rows there; the same report twice is refused and changes nothing.
    appended = subprocess.run([sys.executable, str(tool), "--model", str(onnx_path), "--append",
                               reports[0]], capture_output=True, text=True, timeout=120)
    assert appended.returncode == 2 and "already in" in appended.stderr
    (tmp_path / "receding_horizon" / "summary.json").write_text(json.dumps(
        {"meta": {"chunk_mode": "receding_horizon", "first_seed": 1004},
         "summary": {"episodes": 4, "successes": 4, "success_rate": 1.0,
                     "time_to_completion_s": {"median": 20.0}, "jerk_rms_rad_s3": {"median": 800.0}}}))
    appended = subprocess.run([sys.executable, str(tool), "--model", str(onnx_path), "--append",
                               reports[0]], capture_output=True, text=True, timeout=120)
    assert appended.returncode == 0, appended.stderr
    rows = json.loads((model_dir / "model_card.json").read_text())["evaluation"]["graph"]
    assert [(r["first_seed"], r["successes"]) for r in rows] == [(1000, 3), (1000, 1), (1004, 4)]
    assert "1004" in (model_dir / "MODEL_CARD.md").read_text()

    missing = subprocess.run([sys.executable, str(tool), "--model", str(onnx_path),
                              str(tmp_path / "nowhere")], capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 2 and "summary.json not found" in missing.stderr


def test_record_evaluation_from_in_process_runs(act_export, tmp_path):
    """An eval_policy_inprocess.py --json file becomes a row of evaluation.in_process; the
    card's graph rows stay; a file that is not such a summary is named."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    result, _ = act_export
    model_dir = tmp_path / "model"
    shutil.copytree(result.card_path.parent, model_dir)
    onnx_path = model_dir / result.onnx_path.name
    tools = Path(__file__).resolve().parents[4] / "tools"
    run_json = tmp_path / "inprocess.json"
    run = subprocess.run([sys.executable, str(tools / "eval_policy_inprocess.py"), "--model",
                          str(onnx_path), "--episodes", "1", "--seed", "1234", "--time-limit",
                          "0.2", "--objects", "ground_truth", "--mode", "receding_horizon",
                          "--json", str(run_json)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    graph_row = {"chunk_mode": "receding_horizon", "episodes": 2, "successes": 1}
    card = json.loads((model_dir / "model_card.json").read_text())
    card["evaluation"] = {"graph": [graph_row]}
    (model_dir / "model_card.json").write_text(json.dumps(card))
    record = [sys.executable, str(tools / "record_evaluation.py"), "--model", str(onnx_path)]
    done = subprocess.run([*record, "--in-process", str(run_json)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    evaluation = json.loads((model_dir / "model_card.json").read_text())["evaluation"]
    assert evaluation["graph"] == [graph_row]
    (row,) = evaluation["in_process"]
    assert (row["episodes"], row["successes"], row["first_seed"]) == (1, 0, 1234)
    assert (row["chunk_mode"], row["objects"], row["time_limit_s"]) == (
        "receding_horizon", "ground_truth", 0.2)
    assert row["date"] and "diffusion_samples" not in row  # an ACT run
    buffer = row["chunk_buffer"]  # as played (n 0: the card's)
    assert buffer["mode"] == "receding_horizon"
    assert buffer["n_action_steps"] == card["control"]["n_action_steps"] > 0
    assert "in_process" in (model_dir / "MODEL_CARD.md").read_text()
    again = subprocess.run([*record, "--append", "--in-process", str(run_json)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already in" in again.stderr
    not_a_run = tmp_path / "other.json"
    not_a_run.write_text(json.dumps({"meta": {}}))
    bad = subprocess.run([*record, "--in-process", str(not_a_run)], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "other.json: no summary" in bad.stderr
    nothing = subprocess.run(record, capture_output=True, text=True, timeout=120)
    assert nothing.returncode == 2 and "--in-process" in nothing.stderr
