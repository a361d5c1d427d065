"""Diffusion Policy (Chi et al. 2023, arXiv:2303.04137) with a 1-D temporal U-Net.

`ConditionalUnet1D` is the denoiser eps(x_t, t, cond): it knows nothing of schedules or
features. `DiffusionPolicy` builds the condition from the observation history, trains with the
DDPM objective (predict the noise, MSE) and samples with DDIM. The schedule comes from
armstack_policy.ddim, which the runtime uses for the same reverse process in NumPy.

Network
    x (B, H, D_a) is treated as D_a channels over H time steps. Each level: two residual conv
    blocks (Conv1d -> GroupNorm -> Mish, FiLM from the condition between the two convs: the
    condition predicts a per-channel scale and bias), then a stride-2 downsample. A middle of
    two blocks, then the mirrored up path with skip connections, transposed-conv upsampling and
    a final conv back to D_a channels. The condition is [timestep embedding, flattened
    observation features over the n_obs history].

Object encoder
    With object_encoder_layers > 0 the state and the object slots are not fed to FiLM as one flat
    vector but as tokens (one state token and one per object slot, for each history frame, with
    learned position embeddings that say which slot and frame a token is) through a small
    pre-norm self-attention encoder, whose output tokens, flattened, replace them in the
    condition. FiLM applies one Mish and one linear map to the condition, too shallow to pick
    "the slot of the next cube to fetch" out of a flat vector once the first cube is in the bin;
    attention over slots is how ACT's encoder sees the objects. 0 keeps the paper's flat vector.

Waypoints
    With action_stride s > 1 the H denoised actions are waypoints s frames apart, as the paper's
    10 Hz actions are, and predict_chunk interpolates them linearly to the control rate
    ((H - 1) * s + 1 frames, armstack_policy.actions.upsample_waypoints, which the runtime
    uses too). The U-Net's cost grows with H: at 50 Hz, 16 waypoints 5 frames apart cover the
    paper's 1.5 s for a quarter of the compute of 64 frames.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from itertools import pairwise

import torch
from armstack_policy.actions import upsample_waypoints, waypoint_frames
from armstack_policy.ddim import SPACINGS, NoiseSchedule, alphas_cumprod, ddim_timesteps
from torch import Tensor, nn

from armstack_learning.features import (
    ACTION_KEY,
    ACTION_PAD_KEY,
    ENV_STATE_KEY,
    STATE_KEY,
    FeatureLayout,
)
from armstack_learning.layers import EncoderLayer, ResNet18Trunk, TimestepEmbedding
from armstack_learning.normalize import FeatureNormalizer
from armstack_learning.policy import Policy

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiffusionConfig:
    """Diffusion Policy hyperparameters; validated on construction.

    At 50 Hz, horizon 64 is 1.28 s of actions (the paper's 16 steps at 10 Hz is 1.6 s).
    n_action_steps counts control frames (of the interpolated chunk when action_stride > 1)."""

    n_obs_steps: int = 2
    horizon: int = 64  # actions denoised per chunk; divisible by 2^(len(down_dims) - 1)
    action_stride: int = 1  # frames between those actions (module doc: waypoints)
    n_action_steps: int = 32
    down_dims: tuple[int, ...] = (256, 512, 1024)
    kernel_size: int = 5
    n_groups: int = 8
    timestep_embed_dim: int = 128
    image_feature_dim: int = 64  # per camera, after the ResNet trunk and global average pooling
    resnet_width: int = 64
    object_encoder_layers: int = 0  # 0: state and object slots enter FiLM flat (module doc)
    object_encoder_dim: int = 64
    object_encoder_heads: int = 4
    schedule: NoiseSchedule = field(default_factory=NoiseSchedule)
    num_inference_steps: int = 10
    timestep_spacing: str = "trailing"
    mask_padding: bool = False  # leave padded steps out of the loss (the paper trains on them)
    optimizer_lr: float = 1e-4
    optimizer_weight_decay: float = 1e-6
    optimizer_betas: tuple[float, float] = (0.95, 0.999)

    def __post_init__(self) -> None:
        for name in ("n_obs_steps", "horizon", "action_stride", "n_action_steps", "kernel_size",
                     "n_groups", "timestep_embed_dim", "image_feature_dim", "num_inference_steps",
                     "object_encoder_dim", "object_encoder_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"DiffusionConfig.{name} must be an int >= 1, got {value!r}")
        layers = self.object_encoder_layers
        if not isinstance(layers, int) or isinstance(layers, bool) or layers < 0:
            raise ValueError(f"DiffusionConfig.object_encoder_layers must be an int >= 0, "
                             f"got {layers!r}")
        if self.object_encoder_dim % self.object_encoder_heads:
            raise ValueError(f"DiffusionConfig.object_encoder_dim ({self.object_encoder_dim}) "
                             f"must be divisible by object_encoder_heads "
                             f"({self.object_encoder_heads})")
        if self.n_action_steps > self.chunk_frames:
            raise ValueError(f"DiffusionConfig.n_action_steps ({self.n_action_steps}) must not "
                             f"exceed the chunk's {self.chunk_frames} frames ((horizon - 1) * "
                             "action_stride + 1)")
        if not self.down_dims or not all(isinstance(c, int) and c >= 1 for c in self.down_dims):
            raise ValueError(f"DiffusionConfig.down_dims must be positive ints, got {self.down_dims!r}")
        if any(c % self.n_groups for c in self.down_dims):
            raise ValueError(f"DiffusionConfig.down_dims {self.down_dims} must be divisible by "
                             f"n_groups ({self.n_groups})")
        factor = 2 ** (len(self.down_dims) - 1)
        if self.horizon % factor:
            raise ValueError(f"DiffusionConfig.horizon ({self.horizon}) must be divisible by "
                             f"{factor} (2 ^ (levels - 1) for down_dims {self.down_dims})")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"DiffusionConfig.kernel_size must be odd, got {self.kernel_size}")
        if self.timestep_embed_dim % 2:
            raise ValueError(f"DiffusionConfig.timestep_embed_dim must be even, "
                             f"got {self.timestep_embed_dim}")
        if not isinstance(self.schedule, NoiseSchedule):
            raise ValueError("DiffusionConfig.schedule must be a NoiseSchedule")
        if self.num_inference_steps > self.schedule.num_train_timesteps:
            raise ValueError(f"DiffusionConfig.num_inference_steps ({self.num_inference_steps}) "
                             f"must not exceed num_train_timesteps "
                             f"({self.schedule.num_train_timesteps})")
        if self.timestep_spacing not in SPACINGS:
            raise ValueError(f"DiffusionConfig.timestep_spacing must be one of {SPACINGS}, "
                             f"got {self.timestep_spacing!r}")
        if not self.optimizer_lr > 0.0 or self.optimizer_weight_decay < 0.0:
            raise ValueError("DiffusionConfig.optimizer_lr must be > 0 and optimizer_weight_decay >= 0")

    @property
    def chunk_frames(self) -> int:
        """Control frames a chunk covers: (horizon - 1) * action_stride + 1."""
        return waypoint_frames(self.horizon, self.action_stride)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> DiffusionConfig:
        values = dict(raw)
        values["schedule"] = NoiseSchedule.from_dict(values.get("schedule", {}))
        values["down_dims"] = tuple(values.get("down_dims", cls.down_dims))
        values["optimizer_betas"] = tuple(values.get("optimizer_betas", (0.95, 0.999)))
        return cls(**values)


class ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2),
                                 nn.GroupNorm(groups, c_out), nn.Mish())

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class FiLMResidualBlock(nn.Module):
    """Two conv blocks; between them the condition scales and shifts each channel (FiLM,
    Perez et al. 2018)."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.conv1 = ConvBlock(c_in, c_out, kernel, groups)
        self.conv2 = ConvBlock(c_out, c_out, kernel, groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * c_out))
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """x (B, C_in, H), cond (B, cond_dim) -> (B, C_out, H)."""
        h = self.conv1(x)
        scale, bias = self.film(cond)[:, :, None].chunk(2, dim=1)  # each (B, C_out, 1)
        h = self.conv2(scale * h + bias)
        return h + self.skip(x)


class ConditionalUnet1D(nn.Module):
    """eps(x_t, t, cond): x (B, H, D_a), t (B,) integer steps, cond (B, cond_dim) -> (B, H, D_a)."""

    def __init__(self, action_dim: int, cond_dim: int, down_dims: tuple[int, ...], kernel: int,
                 groups: int, t_dim: int) -> None:
        super().__init__()
        self.t_embed = TimestepEmbedding(t_dim)
        c = t_dim + cond_dim
        dims = [action_dim, *down_dims]
        self.down = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(pairwise(dims)):
            last = i == len(down_dims) - 1
            self.down.append(nn.ModuleList([
                FiLMResidualBlock(c_in, c_out, c, kernel, groups),
                FiLMResidualBlock(c_out, c_out, c, kernel, groups),
                nn.Identity() if last else nn.Conv1d(c_out, c_out, 3, 2, 1)]))
        mid = down_dims[-1]
        self.mid = nn.ModuleList([FiLMResidualBlock(mid, mid, c, kernel, groups) for _ in range(2)])
        self.up = nn.ModuleList()
        # One up level per downsampling, each ending in a 2x transposed conv, so the output is
        # back at H; the skip of the first (full-resolution) level is not reused, as in the
        # paper's network.
        for c_out, c_in in reversed(list(pairwise(down_dims))):
            self.up.append(nn.ModuleList([
                FiLMResidualBlock(2 * c_in, c_out, c, kernel, groups),
                FiLMResidualBlock(c_out, c_out, c, kernel, groups),
                nn.ConvTranspose1d(c_out, c_out, 4, 2, 1)]))
        self.final = nn.Sequential(ConvBlock(down_dims[0], down_dims[0], kernel, groups),
                                   nn.Conv1d(down_dims[0], action_dim, 1))

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        h = x.transpose(1, 2)  # (B, D_a, H)
        c = torch.cat([self.t_embed(t), cond], dim=-1)
        skips = []  # per level (B, C_i, H / 2^i)
        for block1, block2, downsample in self.down:
            h = block2(block1(h, c), c)
            skips.append(h)
            h = downsample(h)
        for block in self.mid:
            h = block(h, c)
        for block1, block2, upsample in self.up:
            h = torch.cat([h, skips.pop()], dim=1)
            h = upsample(block2(block1(h, c), c))
        return self.final(h).transpose(1, 2)


class ObjectEncoder(nn.Module):
    """State and object slots over the history -> (B, n_obs * (1 + N_obj) * dim) (module doc)."""

    def __init__(self, state_dim: int, n_slots: int, slot_dim: int, n_obs: int, dim: int,
                 n_layers: int, n_heads: int) -> None:
        super().__init__()
        self.n_slots, self.slot_dim = n_slots, slot_dim
        self.state_proj = nn.Linear(state_dim, dim)
        self.slot_proj = nn.Linear(slot_dim, dim)
        self.pos = nn.Parameter(torch.randn(n_obs * (1 + n_slots), dim) * 0.02)
        self.layers = nn.ModuleList(EncoderLayer(dim, n_heads, 4 * dim, 0.0, "gelu", pre_norm=True)
                                    for _ in range(n_layers))
        self.norm = nn.LayerNorm(dim)

    @property
    def out_dim(self) -> int:
        return self.pos.shape[0] * self.pos.shape[1]

    def forward(self, state: Tensor, env: Tensor) -> Tensor:
        """state (B, n_obs, D_s), env (B, n_obs, N_obj * F), both normalized."""
        b, n_obs = state.shape[:2]
        slots = self.slot_proj(env.reshape(b, n_obs, self.n_slots, self.slot_dim))
        tokens = torch.cat([self.state_proj(state)[:, :, None], slots], dim=2).flatten(1, 2)
        for layer in self.layers:
            tokens = layer(tokens, self.pos)
        return self.norm(tokens).flatten(1)


class DiffusionPolicy(Policy):
    kind = "diffusion"

    def __init__(self, cfg: DiffusionConfig, layout: FeatureLayout,
                 normalizer: FeatureNormalizer) -> None:
        super().__init__(layout, normalizer, n_obs_steps=cfg.n_obs_steps,
                         chunk_size=cfg.chunk_frames, n_action_steps=cfg.n_action_steps)
        self._cfg = cfg
        self.backbone = None
        if layout.cameras:
            self.backbone = ResNet18Trunk(cfg.resnet_width)
            self.image_head = nn.Linear(self.backbone.out_channels, cfg.image_feature_dim)
        self.object_encoder = None
        if cfg.object_encoder_layers:
            if layout.objects is None:
                raise ValueError("DiffusionConfig.object_encoder_layers > 0 needs object slots "
                                 "in the observation (the layout has none)")
            self.object_encoder = ObjectEncoder(
                layout.state_dim, layout.objects.num_slots, layout.objects.slot_dim,
                cfg.n_obs_steps, cfg.object_encoder_dim, cfg.object_encoder_layers,
                cfg.object_encoder_heads)
            low_dim = self.object_encoder.out_dim
        else:
            low_dim = (layout.state_dim + layout.env_dim) * cfg.n_obs_steps
        image_dim = len(layout.cameras) * cfg.image_feature_dim * cfg.n_obs_steps
        self.unet = ConditionalUnet1D(layout.action.dim, low_dim + image_dim, cfg.down_dims,
                                      cfg.kernel_size, cfg.n_groups, cfg.timestep_embed_dim)
        ab = torch.from_numpy(alphas_cumprod(cfg.schedule)).float()
        self.register_buffer("alphas_cumprod", ab, persistent=False)

    @property
    def config(self) -> DiffusionConfig:
        return self._cfg

    def condition(self, obs: dict[str, Tensor]) -> Tensor:
        """Raw obs {feature: (B, n_obs, ...)} -> (B, cond_dim): per history frame the state,
        object slots and image features, flattened; with the object encoder its tokens, then
        the image features."""
        b = self.check_obs(obs)
        norm = self.normalize_obs(obs)
        parts = []
        if self.object_encoder is None:
            parts.append(norm[STATE_KEY])
            if ENV_STATE_KEY in norm:
                parts.append(norm[ENV_STATE_KEY])
        for key in self.layout.image_keys:
            frames = norm[key].flatten(0, 1)  # (B * n_obs, 3, H, W)
            feat = self.backbone(frames).mean(dim=(2, 3))  # global average pool (B * n_obs, C)
            parts.append(self.image_head(feat).reshape(b, self.n_obs_steps, -1))
        flat = torch.cat(parts, dim=-1).reshape(b, -1) if parts else None
        if self.object_encoder is None:
            return flat
        tokens = self.object_encoder(norm[STATE_KEY], norm[ENV_STATE_KEY])
        return tokens if flat is None else torch.cat([tokens, flat], dim=-1)

    def denoise(self, x_t: Tensor, t: Tensor, obs: dict[str, Tensor]) -> Tensor:
        """eps prediction: x_t (B, H, D_a) normalized actions, t (B,) int64, raw obs."""
        return self.unet(x_t, t, self.condition(obs))

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        cond = self.condition(batch)
        x0 = self.normalizer.normalize(ACTION_KEY, batch[ACTION_KEY])  # (B, H, D_a)
        b = x0.shape[0]
        t = torch.randint(0, self.config.schedule.num_train_timesteps, (b,), device=x0.device)
        noise = torch.randn_like(x0)
        ab = self.alphas_cumprod[t][:, None, None]
        x_t = ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise
        err = (self.unet(x_t, t, cond) - noise).pow(2)
        if self.config.mask_padding:
            valid = (~batch[ACTION_PAD_KEY]).unsqueeze(-1).to(err.dtype)
            loss = (err * valid).sum() / (valid.sum() * err.shape[-1]).clamp(min=1.0)
        else:
            loss = err.mean()
        return loss, {"loss": loss.item(), "mse": loss.item()}

    def sample(self, obs: dict[str, Tensor], noise: Tensor) -> Tensor:
        """DDIM reverse process from noise (B, H, D_a) -> normalized actions (B, H, D_a).

        The same arithmetic as armstack_policy.ddim.DDIMSampler (eta = 0, x0 clipping)."""
        cfg = self.config
        cond = self.condition(obs)
        steps = ddim_timesteps(cfg.schedule.num_train_timesteps, cfg.num_inference_steps,
                               cfg.timestep_spacing)
        clip = cfg.schedule.clip_sample_range if cfg.schedule.clip_sample else None
        x = noise
        for i, t in enumerate(steps.tolist()):
            eps = self.unet(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device), cond)
            ab_t = self.alphas_cumprod[t]
            ab_prev = self.alphas_cumprod[int(steps[i + 1])] if i + 1 < len(steps) else x.new_tensor(1.0)
            x0 = (x - (1.0 - ab_t).sqrt() * eps) / ab_t.sqrt()
            if clip is not None:
                x0 = x0.clamp(-clip, clip)
            x = ab_prev.sqrt() * x0 + (1.0 - ab_prev).sqrt() * eps
        return x

    def predict_chunk(self, obs: dict[str, Tensor], noise: Tensor | None = None) -> Tensor:
        """(B, chunk_frames, D_a) raw actions from noise (B, horizon, D_a) (default: drawn)."""
        if self.training:
            raise RuntimeError("predict_chunk needs eval mode: call .eval() first")
        b = self.check_obs(obs)
        if noise is None:
            noise = torch.randn(b, self.config.horizon, self.layout.action.dim,
                                device=self.alphas_cumprod.device)
        actions = self.normalizer.unnormalize(ACTION_KEY, self.sample(obs, noise))
        if self.config.action_stride == 1:
            return actions
        return torch.from_numpy(upsample_waypoints(actions.cpu().numpy(),
                                                   self.config.action_stride)).to(actions.device)

    def optimizer_groups(self) -> list[dict]:
        return [{"params": list(self.parameters()), "lr": self.config.optimizer_lr}]
