"""Diffusion Policy: U-Net shapes, training objective, torch vs NumPy DDIM, config validation."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training dependencies (requirements-train.txt)")

from armstack_learning.diffusion import ConditionalUnet1D, DiffusionConfig  # noqa: E402
from armstack_learning.factory import build_policy, placeholder_normalizer  # noqa: E402
from armstack_learning.features import FeatureLayout  # noqa: E402
from armstack_policy.ddim import DDIMSampler, NoiseSchedule, alphas_cumprod  # noqa: E402


@pytest.mark.parametrize("down_dims, horizon", [((16,), 5), ((16, 32), 8), ((8, 16, 32), 12)])
def test_unet_keeps_the_chunk_shape(down_dims, horizon):
    net = ConditionalUnet1D(action_dim=7, cond_dim=10, down_dims=down_dims, kernel=3, groups=4,
                            t_dim=8)
    x = torch.randn(3, horizon, 7)
    out = net(x, torch.tensor([0, 50, 99]), torch.randn(3, 10))
    assert out.shape == x.shape


def test_unet_output_depends_on_timestep_and_condition():
    torch.manual_seed(0)
    net = ConditionalUnet1D(7, 10, (16, 32), 3, 4, 8)
    x, cond = torch.randn(1, 8, 7), torch.randn(1, 10)
    base = net(x, torch.tensor([10]), cond)
    assert not torch.allclose(base, net(x, torch.tensor([90]), cond))
    assert not torch.allclose(base, net(x, torch.tensor([10]), cond + 1.0))


def test_policy_condition_flattens_history_and_images(tiny_diffusion_config):
    layout = FeatureLayout(cameras=("top",), image_size=(32, 32))
    cfg = tiny_diffusion_config()
    policy = build_policy("diffusion", cfg, layout, placeholder_normalizer(layout)).eval()
    obs = {"observation.state": torch.randn(2, 2, 7),
           "observation.environment_state": torch.randn(2, 2, 12),
           "observation.images.top": torch.rand(2, 2, 3, 32, 32)}
    assert policy.condition(obs).shape == (2, 2 * (7 + 12 + cfg.image_feature_dim))
    assert policy.predict_chunk(obs).shape == (2, cfg.horizon, 7)
    with pytest.raises(ValueError, match="observation steps"):
        policy.predict_chunk({k: v[:, :1] for k, v in obs.items()})


def test_forward_process_uses_the_shared_schedule(make_policy, tiny_diffusion_config):
    policy, _ = make_policy("diffusion", tiny_diffusion_config())
    want = alphas_cumprod(NoiseSchedule(num_train_timesteps=100))
    np.testing.assert_allclose(policy.alphas_cumprod.numpy(), want, rtol=1e-6)


def test_training_reduces_the_denoising_loss(make_policy, make_batch, tiny_diffusion_config):
    policy, ds = make_policy("diffusion", tiny_diffusion_config())
    batch = make_batch(ds, list(range(0, 120, 4)))
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    torch.manual_seed(0)
    losses = []
    for _ in range(120):
        loss, info = policy(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(info["loss"])
    # The per-step loss is noisy (random t and noise): compare averages. Predicting eps = 0
    # scores 1.0; the small net gets to ~0.65 here.
    assert np.mean(losses[-20:]) < 0.75 * np.mean(losses[:10]), (losses[:10], losses[-20:])


@pytest.mark.parametrize("mask", [False, True])
def test_loss_is_the_noise_mse_over_valid_steps(make_policy, make_batch, tiny_diffusion_config,
                                               mask):
    """With a denoiser that predicts zeros the loss is the mean of noise^2 over the steps the
    loss counts: all of them, or the unpadded ones with mask_padding."""
    policy, ds = make_policy("diffusion", tiny_diffusion_config(mask_padding=mask))
    policy.unet.forward = lambda x, t, cond: torch.zeros_like(x)
    batch = make_batch(ds, [36, 37, 38])  # chunks that run past episode 0's end
    valid = (~batch["action_is_pad"]).unsqueeze(-1).float()  # (B, H, 1)
    assert valid.min() == 0.0
    torch.manual_seed(3)
    loss = policy(batch)[0].item()
    torch.manual_seed(3)  # the same draws as forward: timesteps, then noise
    torch.randint(0, 100, (3,))
    noise_sq = torch.randn(3, 8, 7).pow(2)
    want = (noise_sq * valid).sum() / (valid.sum() * 7) if mask else noise_sq.mean()
    assert loss == pytest.approx(want.item(), rel=1e-5)


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_torch_sampler_matches_numpy_sampler(make_policy, make_batch, tiny_diffusion_config, spacing):
    policy, ds = make_policy("diffusion", tiny_diffusion_config(timestep_spacing=spacing,
                                                                num_inference_steps=7))
    policy.eval()
    batch = make_batch(ds, [10, 60])
    obs = {k: batch[k] for k in policy.layout.input_keys}
    noise = np.random.default_rng(0).standard_normal((2, 8, 7)).astype(np.float32)
    with torch.no_grad():
        want = policy.sample(obs, torch.from_numpy(noise)).numpy()

        def denoise(x: np.ndarray, t: int) -> np.ndarray:
            return policy.denoise(torch.from_numpy(x), torch.full((2,), t), obs).numpy()

        got = DDIMSampler(policy.config.schedule, 7, spacing).sample(denoise, noise)
    assert np.max(np.abs(got - want)) < 1e-5
    assert np.max(np.abs(want)) <= 1.0 + 1e-6  # clipped x0 at the last step


def test_select_action_keeps_an_observation_history(make_policy, make_batch, tiny_diffusion_config):
    policy, ds = make_policy("diffusion", tiny_diffusion_config())
    policy.eval()
    seen = []
    original = policy.predict_chunk

    def spy(obs):
        seen.append(obs["observation.state"].clone())
        return original(obs)

    policy.predict_chunk = spy
    batch = make_batch(ds, [0, 1, 2, 3, 4, 5])
    states = batch["observation.state"][:, -1]  # (6, 7), frames 0..5 of episode 0
    for i in range(6):
        obs_t = {"observation.state": states[i:i + 1],
                 "observation.environment_state": batch["observation.environment_state"][i:i + 1, -1]}
        assert policy.select_action(obs_t).shape == (1, 7)
    assert len(seen) == 2  # n_action_steps = 4: replanned at steps 0 and 4
    torch.testing.assert_close(seen[0][0], states[[0, 0]])  # first step repeated
    torch.testing.assert_close(seen[1][0], states[[3, 4]])


@pytest.mark.parametrize("kwargs, field", [
    ({"horizon": 10, "n_action_steps": 4, "down_dims": (8, 16, 32), "n_groups": 4},
     "DiffusionConfig.horizon"),
    ({"n_action_steps": 100}, "DiffusionConfig.n_action_steps"),
    ({"down_dims": (12, 24), "n_groups": 8}, "DiffusionConfig.down_dims"),
    ({"kernel_size": 4}, "DiffusionConfig.kernel_size"),
    ({"num_inference_steps": 101}, "DiffusionConfig.num_inference_steps"),
    ({"timestep_spacing": "linspace"}, "DiffusionConfig.timestep_spacing"),
    ({"n_obs_steps": 0}, "DiffusionConfig.n_obs_steps"),
    ({"action_stride": 0}, "DiffusionConfig.action_stride"),
    ({"horizon": 16, "action_stride": 5, "n_action_steps": 77},
     r"DiffusionConfig.n_action_steps \(77\) must not exceed the chunk's 76 frames"),
    ({"object_encoder_layers": -1}, "DiffusionConfig.object_encoder_layers"),
    ({"object_encoder_dim": 30, "object_encoder_heads": 4}, "DiffusionConfig.object_encoder_dim"),
])
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        DiffusionConfig(**kwargs)


def test_config_round_trips_through_dict(tiny_diffusion_config):
    cfg = tiny_diffusion_config(schedule=NoiseSchedule(num_train_timesteps=50, clip_sample=False))
    assert DiffusionConfig.from_dict(cfg.to_dict()) == cfg


def test_object_encoder_conditions_on_slot_tokens(make_policy, make_batch, tiny_diffusion_config):
    cfg = tiny_diffusion_config(object_encoder_layers=1, object_encoder_dim=16,
                                object_encoder_heads=2)
    policy, ds = make_policy("diffusion", cfg)
    batch = make_batch(ds, [0, 40])
    cond = policy.eval().condition(batch)
    n_slots = policy.layout.objects.num_slots
    assert cond.shape == (2, cfg.n_obs_steps * (1 + n_slots) * 16)
    # Swapping two object slots changes the condition: the slot position embeddings tell them
    # apart, which a set encoder without them would not.
    env = batch["observation.environment_state"]
    slot = policy.layout.objects.slot_dim
    swapped = torch.cat([env[..., slot:2 * slot], env[..., :slot], env[..., 2 * slot:]], dim=-1)
    assert not torch.allclose(cond, policy.condition({**batch,
                                                      "observation.environment_state": swapped}))
    assert policy.predict_chunk(batch).shape == (2, cfg.chunk_frames, 7)


def test_object_encoder_needs_object_slots(tiny_diffusion_config):
    layout = FeatureLayout(cameras=("top",), image_size=(32, 32), objects=None)
    with pytest.raises(ValueError, match="object_encoder_layers > 0 needs object slots"):
        build_policy("diffusion", tiny_diffusion_config(object_encoder_layers=1), layout,
                     placeholder_normalizer(layout))
