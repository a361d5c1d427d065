"""ACT: shapes, KL term, padding mask, overfitting, inference path, config validation."""

import pytest

torch = pytest.importorskip("torch", reason="training dependencies (requirements-train.txt)")

from armstack_learning.act import ACT, ACTConfig, kl_to_standard_normal  # noqa: E402
from armstack_learning.factory import build_policy, placeholder_normalizer  # noqa: E402
from armstack_learning.features import FeatureLayout  # noqa: E402


def test_network_shapes_with_images(tiny_act_config):
    cfg = tiny_act_config()
    net = ACT(cfg, state_dim=7, n_slots=3, slot_dim=4, action_dim=7, n_cameras=2,
              image_size=(64, 96))
    b = 3
    images = [torch.randn(b, 3, 64, 96) for _ in range(2)]
    actions, mu, logvar = net(torch.randn(b, 7), torch.randn(b, 12), images,
                              torch.randn(b, cfg.chunk_size, 7),
                              torch.zeros(b, cfg.chunk_size, dtype=torch.bool))
    assert actions.shape == (b, cfg.chunk_size, 7)
    assert mu.shape == logvar.shape == (b, cfg.latent_dim)
    actions, mu, logvar = net(torch.randn(b, 7), torch.randn(b, 12), images)
    assert actions.shape == (b, cfg.chunk_size, 7) and mu is None and logvar is None


def test_policy_with_camera_predicts_raw_chunk(tiny_act_config):
    layout = FeatureLayout(cameras=("top",), image_size=(32, 32))
    policy = build_policy("act", tiny_act_config(), layout, placeholder_normalizer(layout)).eval()
    obs = {"observation.state": torch.randn(2, 1, 7),
           "observation.environment_state": torch.randn(2, 1, 12),
           "observation.images.top": torch.rand(2, 1, 3, 32, 32)}
    assert policy.predict_chunk(obs).shape == (2, 10, 7)
    groups = policy.optimizer_groups()
    assert len(groups) == 2  # the trunk has its own learning rate


def test_kl_matches_closed_form():
    mu = torch.tensor([[0.0, 0.0], [1.0, -2.0]])
    logvar = torch.tensor([[0.0, 0.0], [0.5, -1.0]])
    # per dim: 0.5 * (sigma^2 + mu^2 - 1 - log sigma^2)
    e = torch.exp(torch.tensor([0.5, -1.0]))
    row1 = 0.5 * ((e[0] + 1 - 1 - 0.5) + (e[1] + 4 - 1 + 1))
    assert kl_to_standard_normal(mu, logvar).item() == pytest.approx(row1.item() / 2, rel=1e-6)
    assert kl_to_standard_normal(torch.zeros(4, 3), torch.zeros(4, 3)).item() == 0.0


def test_loss_parts_and_kl_weight(make_policy, make_batch, tiny_act_config):
    policy, ds = make_policy("act", tiny_act_config(kl_weight=10.0, l2_weight=0.5))
    batch = make_batch(ds, [0, 5, 50, 100])
    torch.manual_seed(1)
    loss, info = policy(batch)
    assert set(info) == {"l1", "l2", "kl", "loss"}
    assert loss.item() == pytest.approx(info["l1"] + 0.5 * info["l2"] + 10.0 * info["kl"], rel=1e-5)
    assert info["kl"] > 0.0


def test_padded_steps_do_not_enter_the_loss(make_policy, make_batch, tiny_act_config):
    policy, ds = make_policy("act", tiny_act_config(use_vae=False))
    batch = make_batch(ds, [36, 37, 38])  # near episode 0's end: chunks are partly padded
    pad = batch["action_is_pad"]
    assert pad.any() and not pad.all()
    loss, _ = policy(batch)
    changed = {**batch, "action": batch["action"].clone()}
    changed["action"][pad] += 100.0
    assert policy(changed)[0].item() == pytest.approx(loss.item(), rel=1e-6)
    changed["action"][~pad] += 1.0
    assert policy(changed)[0].item() != pytest.approx(loss.item(), rel=1e-3)


def test_overfits_a_small_batch(make_policy, make_batch, tiny_act_config):
    policy, ds = make_policy("act", tiny_act_config())
    batch = make_batch(ds, list(range(0, 120, 8)))
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    torch.manual_seed(0)
    first = None
    for _ in range(150):
        loss, info = policy(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else info["l1"]
    assert info["l1"] < 0.3 * first, (first, info)
    policy.eval()
    with torch.no_grad():
        pred = policy.predict_chunk({k: batch[k] for k in policy.layout.input_keys})
    valid = ~batch["action_is_pad"]
    # raw units (rad / m): the fitted chunk tracks the demonstrations
    err = (pred - batch["action"]).abs()[valid].mean().item()
    spread = batch["action"][valid].std(0).mean().item()
    assert err < 0.5 * spread


def test_inference_is_deterministic_and_needs_eval(make_policy, make_batch, tiny_act_config):
    policy, ds = make_policy("act", tiny_act_config(dropout=0.1))
    batch = make_batch(ds, [3, 4])
    obs = {k: batch[k] for k in policy.layout.input_keys}
    with pytest.raises(RuntimeError, match="eval"):
        policy.predict_chunk(obs)
    policy.eval()
    with torch.no_grad():
        torch.testing.assert_close(policy.predict_chunk(obs), policy.predict_chunk(obs))


def test_select_action_replans_every_n_action_steps(make_policy, make_batch, tiny_act_config):
    policy, ds = make_policy("act", tiny_act_config(n_action_steps=3))
    policy.eval()
    calls = []
    original = policy.predict_chunk

    def counting(obs):
        calls.append(obs["observation.state"].shape)
        return original(obs)

    policy.predict_chunk = counting
    batch = make_batch(ds, [0])
    obs_t = {k: batch[k][:, -1] for k in policy.layout.input_keys}
    actions = [policy.select_action(obs_t) for _ in range(7)]
    assert len(calls) == 3 and calls[0] == (1, 1, 7)
    assert actions[0].shape == (1, 7)
    policy.reset()
    policy.select_action(obs_t)
    assert len(calls) == 4


@pytest.mark.parametrize("kwargs, field", [
    ({"chunk_size": 0}, "ACTConfig.chunk_size"),
    ({"n_action_steps": 101}, "ACTConfig.n_action_steps"),
    ({"dim_model": 30, "n_heads": 4}, "ACTConfig.dim_model"),
    ({"activation": "tanh"}, "ACTConfig.activation"),
    ({"dropout": 1.0}, "ACTConfig.dropout"),
    ({"kl_weight": -1.0}, "ACTConfig.kl_weight"),
    ({"optimizer_lr": 0.0}, "ACTConfig.optimizer_lr"),
])
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ACTConfig(**kwargs)
