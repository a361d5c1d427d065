"""Training loop: exact resume, checkpoints and log, batch order, configs (in process)."""

import json
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training dependencies (requirements-train.txt)")

from armstack_learning.factory import config_with_overrides, override_arg  # noqa: E402
from armstack_learning.train import (  # noqa: E402
    DistInfo,
    StepBatchSampler,
    TrainConfig,
    latest_checkpoint,
    train,
)


def _config(dataset_root, out, kind, **kwargs) -> TrainConfig:
    values = {"policy": kind, "dataset": str(dataset_root), "out": str(out), "steps": 6,
              "batch_size": 4, "save_every": 100, "log_every": 2}
    values.update(kwargs)
    return TrainConfig(**values)


def _assert_same(a, b, path="ckpt"):
    """Recursive exact equality of checkpoint contents (tensors bit for bit)."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=path)
    else:
        assert a == b, path


@pytest.mark.parametrize("kind", ["act", "diffusion"])
def test_resume_continues_exactly(tmp_path, dataset_root, layout, tiny_act_config,
                                  tiny_diffusion_config, kind):
    # dropout and the VAE latent (ACT), timesteps and noise (diffusion) all draw from the RNG
    cfg = tiny_act_config(dropout=0.1) if kind == "act" else tiny_diffusion_config()
    extra = {"ema": True, "lr_schedule": "cosine", "warmup_steps": 2} if kind == "diffusion" else {}
    straight = train(_config(dataset_root, tmp_path / "a", kind, **extra), cfg, layout)
    _ = train(_config(dataset_root, tmp_path / "b", kind, stop_at=3, **extra), cfg, layout)
    assert latest_checkpoint(tmp_path / "b").name == "step_000000003.pt"
    # as if the run had gone on past its checkpoint and been killed: resuming logs step 4 again
    with open(tmp_path / "b" / "train_log.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": 4, "loss": -1.0}) + "\n")
    resumed = train(_config(dataset_root, tmp_path / "b", kind, **extra), cfg, layout, resume=True)
    a = torch.load(straight, weights_only=False)
    b = torch.load(resumed, weights_only=False)
    assert a["step"] == b["step"] == 6
    for key in ("model", "optimizer", "scheduler", "ema", "rng"):
        _assert_same(a[key], b[key], key)
    log = [json.loads(line) for line in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 3, 4, 6]  # every 2 steps plus the stop step


def test_resume_without_checkpoint_starts_fresh_and_at_end_does_nothing(
        tmp_path, dataset_root, layout, tiny_act_config):
    cfg = _config(dataset_root, tmp_path / "run", "act", steps=2)
    first = train(cfg, tiny_act_config(), layout, resume=True)
    assert first.name == "step_000000002.pt"
    before = first.stat().st_mtime_ns
    assert train(cfg, tiny_act_config(), layout, resume=True) == first
    assert first.stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="'act' policy"):
        train(_config(dataset_root, tmp_path / "run", "diffusion", steps=2),
              tiny_act_config(), layout, resume=True)


def test_resume_names_the_given_config_keys_it_ignores(tmp_path, dataset_root, layout,
                                                      tiny_act_config, vla_dataset_root,
                                                      vla_layout, caplog):
    cfg = _config(dataset_root, tmp_path / "act", "act", steps=2)
    train(cfg, tiny_act_config(), layout)
    with caplog.at_level("WARNING", logger="armstack_learning.train"):
        train(cfg, tiny_act_config(dropout=0.25), layout, resume=True)
    assert "ignored: dropout=0.25" in caplog.text
    # the tool gives a VLA config without the vocabulary the checkpoint's was completed with
    from armstack_learning.vla import VLAConfig
    given = VLAConfig(image_size=(32, 32), stem_channels=(8, 8), patch_size=2, dim_model=32,
                      n_heads=2, n_layers=1, dim_feedforward=64, chunk_size=2, n_action_steps=1,
                      max_instruction_tokens=8, object_loss_weight=0.0)
    vla = _config(vla_dataset_root, tmp_path / "vla", "vla", steps=1, batch_size=2)
    train(vla, given, vla_layout)
    caplog.clear()
    with caplog.at_level("WARNING", logger="armstack_learning.train"):
        train(vla, given, vla_layout, resume=True)
    assert "ignored" not in caplog.text


def test_init_from_starts_a_new_run_from_a_checkpoints_weights(
        tmp_path, dataset_root, layout, tiny_act_config):
    source = train(_config(dataset_root, tmp_path / "a", "act"), tiny_act_config(), layout)
    # A negligible LR: the fine-tuned weights stay those of the source, not a fresh init. The
    # policy config given now (another dim_model) yields to the checkpoint's; the object hold
    # given now is used (it changes no weight).
    held = replace(layout, objects=replace(layout.objects, hold=0.1))
    tuned = train(_config(dataset_root, tmp_path / "b", "act", steps=2, lr=1e-12,
                          lr_schedule="cosine", init_from=str(source)),
                  tiny_act_config(dim_model=48), held)
    a = torch.load(source, weights_only=False)
    b = torch.load(tuned, weights_only=False)
    assert b["step"] == 2 and b["scheduler"]["last_epoch"] == 2
    assert b["policy_config"] == a["policy_config"]
    assert (a["layout"]["objects"]["hold"], b["layout"]["objects"]["hold"]) == (0.0, 0.1)
    for name, value in a["model"].items():
        torch.testing.assert_close(b["model"][name], value, rtol=0, atol=1e-8, msg=name)
    assert b["init"] == {"path": str(source.resolve()), "step": 6, "steps_before": 6}
    # A second fine-tune counts every step before it; resuming one keeps its origin.
    again = train(_config(dataset_root, tmp_path / "c", "act", steps=1, init_from=str(tuned)),
                  tiny_act_config(), layout)
    assert torch.load(again, weights_only=False)["init"]["steps_before"] == 8
    resumed = train(_config(dataset_root, tmp_path / "b", "act", steps=3, lr=1e-12,
                            lr_schedule="cosine", init_from=str(source)),
                    tiny_act_config(), layout, resume=True)
    assert torch.load(resumed, weights_only=False)["init"] == b["init"]
    with pytest.raises(ValueError, match="no such checkpoint.*train_policy.py"):
        train(_config(dataset_root, tmp_path / "d", "act", init_from=str(tmp_path / "x.pt")),
              tiny_act_config(), layout)
    with pytest.raises(ValueError, match="'act' policy, not 'diffusion'"):
        train(_config(dataset_root, tmp_path / "d", "diffusion", init_from=str(source)),
              tiny_act_config(), layout)


def test_train_config_keeps_its_augmentations_and_reads_checkpoints_made_before_rotation():
    from armstack_learning.augment import BaseRotationConfig, RelocationConfig

    cfg = _config("/d", "/o", "act", relocation=RelocationConfig(probability=0.5),
                  rotation=BaseRotationConfig(probability=0.3, max_angle_deg=8.0))
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    older = {k: v for k, v in cfg.to_dict().items() if k != "rotation"}
    assert not TrainConfig.from_dict(older).rotation.enabled


def test_a_run_on_some_episodes_records_them(tmp_path, dataset_root, layout, tiny_act_config,
                                             synthetic):
    from armstack_learning.export import md_dataset

    last = train(_config(dataset_root, tmp_path / "run", "act", steps=2, episodes=(2, 0)),
                 tiny_act_config(), layout)
    ckpt = torch.load(last, weights_only=False)
    data = ckpt["dataset"]
    assert (data["episodes"], data["episode_index"]) == (2, [0, 2])
    assert data["frames"] == 2 * synthetic.frames
    assert TrainConfig.from_dict(ckpt["train_config"]).episodes == (2, 0)
    assert "2 episodes (episodes 0,2 of the dataset)" in md_dataset(data)[0]
    whole = torch.load(train(_config(dataset_root, tmp_path / "all", "act", steps=2),
                             tiny_act_config(), layout), weights_only=False)["dataset"]
    assert "episode_index" not in whole and whole["episodes"] == 3


def test_checkpoints_are_pruned(tmp_path, dataset_root, layout, tiny_act_config):
    train(_config(dataset_root, tmp_path, "act", steps=5, save_every=1, keep_checkpoints=2),
          tiny_act_config(), layout)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_000000004.pt", "step_000000005.pt"]


def test_batches_follow_step_and_split_across_ranks():
    whole = list(StepBatchSampler(20, 3, 7, DistInfo(), 0, 8))
    again = list(StepBatchSampler(20, 3, 7, DistInfo(), 5, 8))
    assert whole[5:] == again  # a resumed run reads the same batches
    assert all(len(b) == 3 for b in whole)
    epoch0 = [i for b in whole[:6] for i in b]  # 6 batches of 3 per epoch of 20
    assert len(set(epoch0)) == 18
    ranks = [list(StepBatchSampler(20, 3, 7, DistInfo(r, 2, r), 0, 3)) for r in (0, 1)]
    seen = [{i for b in r for i in b} for r in ranks]
    assert not seen[0] & seen[1]  # ranks read disjoint samples within an epoch
    with pytest.raises(ValueError, match="batch"):
        StepBatchSampler(5, 3, 0, DistInfo(0, 2, 0), 0, 1)


@pytest.mark.parametrize("kwargs, field", [
    ({"policy": "bc"}, "TrainConfig.policy"),
    ({"steps": 0}, "TrainConfig.steps"),
    ({"lr": -1.0}, "TrainConfig.lr"),
    ({"lr_schedule": "step"}, "TrainConfig.lr_schedule"),
    ({"stop_at": 7}, "TrainConfig.stop_at"),
    ({"episodes": ()}, "TrainConfig.episodes"),
    ({"episodes": (0, -1)}, "TrainConfig.episodes"),
])
def test_train_config_validation_names_the_field(kwargs, field):
    values = {"policy": "act", "dataset": "d", "out": "o", "steps": 6}
    values.update(kwargs)
    with pytest.raises(ValueError, match=field):
        TrainConfig(**values)


def test_policy_config_overrides_from_strings():
    cfg = config_with_overrides("diffusion", {"horizon": "32", "down_dims": "[64, 128]",
                                              "schedule.num_train_timesteps": "50",
                                              "timestep_spacing": "leading"})
    assert cfg.horizon == 32 and cfg.down_dims == (64, 128)
    assert cfg.schedule.num_train_timesteps == 50 and cfg.timestep_spacing == "leading"
    with pytest.raises(ValueError, match="chunk_sise"):
        config_with_overrides("act", {"chunk_sise": "5"})
    with pytest.raises(ValueError, match="ACTConfig.chunk_size"):
        config_with_overrides("act", {"chunk_size": "0"})


def test_override_arguments_split_at_the_first_equals_sign():
    import argparse

    assert override_arg("down_dims=[64,128]") == ("down_dims", "[64,128]")
    assert override_arg("task=a=b") == ("task", "a=b")
    for bad in ("chunk_size", "=5"):
        with pytest.raises(argparse.ArgumentTypeError, match="NAME=VALUE"):
            override_arg(bad)
