"""ACT: Action Chunking with Transformers (Zhao et al. 2023, arXiv:2304.13705).

`ACT` is the network (normalized tensors in, normalized action chunk out); `ACTPolicy` owns the
normalization and the loss. Temporal ensembling and chunk execution belong to the runtime
(armstack_policy.chunk_buffer), not here.

Network
    Posterior (training only): a transformer encoder over [CLS, state, a_t .. a_t+k-1] with fixed
    sine positions, padded actions masked out; CLS -> (mu, log sigma^2) of a latent z.
    Main encoder over [z, state, one token per object slot, image feature tokens]: z and state
    and the object tokens get learned position embeddings (the object's slot embedding says
    which class it is), image tokens a 2-D sine position plus a learned per-camera embedding.
    Decoder: k learned queries cross-attend to the encoder output; a linear head gives (k, D_a).
    At inference z is the prior mean, zeros, so the policy is deterministic.
Loss
    L1 between normalized actions over the unpadded steps (+ optional L2) + kl_weight * KL(q(z)
    || N(0, I)), the KL summed over latent dimensions and averaged over the batch.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from armstack_learning.features import (
    ACTION_KEY,
    ACTION_PAD_KEY,
    ENV_STATE_KEY,
    STATE_KEY,
    FeatureLayout,
)
from armstack_learning.layers import (
    ACTIVATIONS,
    DecoderLayer,
    EncoderLayer,
    ResNet18Trunk,
    sinusoid_2d,
    sinusoid_table,
)
from armstack_learning.normalize import FeatureNormalizer
from armstack_learning.policy import Policy

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ACTConfig:
    """ACT hyperparameters; defaults are the paper's (and LeRobot's). Validated on construction."""

    chunk_size: int = 100  # k actions = 2 s at 50 Hz
    n_action_steps: int = 100  # actions executed per inference by select_action
    dim_model: int = 512
    n_heads: int = 8
    dim_feedforward: int = 3200
    activation: str = "relu"
    n_encoder_layers: int = 4
    # The original code builds 7 decoder layers but only the first one's output is used
    # (tonyzhaozh/act issue 25); 1 is the effective architecture.
    n_decoder_layers: int = 1
    pre_norm: bool = False
    use_vae: bool = True
    latent_dim: int = 32
    n_vae_encoder_layers: int = 4
    dropout: float = 0.1
    kl_weight: float = 10.0
    l2_weight: float = 0.0  # optional extra L2 reconstruction term
    resnet_width: int = 64  # image trunk channels (64 = ResNet-18)
    optimizer_lr: float = 1e-5
    optimizer_lr_backbone: float = 1e-5
    optimizer_weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        for name in ("chunk_size", "n_action_steps", "dim_model", "n_heads", "dim_feedforward",
                     "n_encoder_layers", "n_decoder_layers", "latent_dim", "n_vae_encoder_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ACTConfig.{name} must be an int >= 1, got {value!r}")
        if self.n_action_steps > self.chunk_size:
            raise ValueError(f"ACTConfig.n_action_steps ({self.n_action_steps}) must not exceed "
                             f"chunk_size ({self.chunk_size})")
        if self.dim_model % self.n_heads:
            raise ValueError(f"ACTConfig.dim_model ({self.dim_model}) must be divisible by "
                             f"n_heads ({self.n_heads})")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"ACTConfig.activation must be one of {ACTIVATIONS}, "
                             f"got {self.activation!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ACTConfig.dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("kl_weight", "l2_weight", "optimizer_weight_decay"):
            if getattr(self, name) < 0.0:
                raise ValueError(f"ACTConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("optimizer_lr", "optimizer_lr_backbone"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"ACTConfig.{name} must be > 0, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class ACT(nn.Module):
    """The ACT network on normalized tensors (see the module doc)."""

    def __init__(self, cfg: ACTConfig, state_dim: int, n_slots: int, slot_dim: int,
                 action_dim: int, n_cameras: int = 0, image_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.dim_model
        self.n_slots, self.slot_dim = n_slots, slot_dim

        def encoder(n: int) -> nn.ModuleList:
            return nn.ModuleList(EncoderLayer(d, cfg.n_heads, cfg.dim_feedforward, cfg.dropout,
                                              cfg.activation, cfg.pre_norm) for _ in range(n))

        if cfg.use_vae:
            self.vae_cls = nn.Parameter(torch.zeros(1, 1, d))
            self.vae_state_proj = nn.Linear(state_dim, d)
            self.vae_action_proj = nn.Linear(action_dim, d)
            self.vae_encoder = encoder(cfg.n_vae_encoder_layers)
            self.vae_head = nn.Linear(d, 2 * cfg.latent_dim)
            self.register_buffer("vae_pos", sinusoid_table(cfg.chunk_size + 2, d), persistent=False)
        self.latent_proj = nn.Linear(cfg.latent_dim, d)
        self.state_proj = nn.Linear(state_dim, d)
        self.slot_proj = nn.Linear(slot_dim, d) if n_slots else None
        n_tokens_1d = 2 + n_slots
        self.token_pos = nn.Parameter(torch.randn(n_tokens_1d, d) * 0.02)
        self.backbone = None
        if n_cameras:
            self.backbone = ResNet18Trunk(cfg.resnet_width)
            self.image_proj = nn.Conv2d(self.backbone.out_channels, d, 1)
            fh, fw = ResNet18Trunk.output_size(*image_size)
            self.register_buffer("image_pos", sinusoid_2d(fh, fw, d), persistent=False)
            self.camera_pos = nn.Parameter(torch.randn(n_cameras, 1, d) * 0.02)
        self.encoder = encoder(cfg.n_encoder_layers)
        self.encoder_norm = nn.LayerNorm(d) if cfg.pre_norm else nn.Identity()
        self.decoder = nn.ModuleList(DecoderLayer(d, cfg.n_heads, cfg.dim_feedforward, cfg.dropout,
                                                  cfg.activation, cfg.pre_norm)
                                     for _ in range(cfg.n_decoder_layers))
        self.decoder_norm = nn.LayerNorm(d)
        self.query_pos = nn.Parameter(torch.randn(cfg.chunk_size, d) * 0.02)
        self.action_head = nn.Linear(d, action_dim)

    def posterior(self, state: Tensor, actions: Tensor, action_is_pad: Tensor) -> tuple[Tensor, Tensor]:
        """state (B, D_s), actions (B, k, D_a), action_is_pad (B, k) -> mu, logvar (B, latent)."""
        b = state.shape[0]
        tokens = torch.cat([self.vae_cls.expand(b, -1, -1), self.vae_state_proj(state)[:, None],
                            self.vae_action_proj(actions)], dim=1)  # (B, k+2, d)
        mask = torch.cat([torch.zeros(b, 2, dtype=torch.bool, device=state.device), action_is_pad],
                         dim=1)  # (B, k+2)
        for layer in self.vae_encoder:
            tokens = layer(tokens, self.vae_pos, mask)
        mu, logvar = self.vae_head(tokens[:, 0]).chunk(2, dim=-1)
        return mu, logvar

    def _memory(self, z: Tensor, state: Tensor, env: Tensor | None,
                images: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Encoder input tokens (B, N, d) and their position embeddings (B, N, d)."""
        b = state.shape[0]
        tokens = [self.latent_proj(z)[:, None], self.state_proj(state)[:, None]]
        if self.slot_proj is not None:
            slots = env.reshape(b, self.n_slots, self.slot_dim)  # (B, N_obj, F)
            tokens.append(self.slot_proj(slots))
        pos = [self.token_pos[None].expand(b, -1, -1)]
        for i, image in enumerate(images):
            feat = self.image_proj(self.backbone(image))  # (B, d, h, w)
            tokens.append(feat.flatten(2).transpose(1, 2))  # (B, h*w, d)
            pos.append((self.image_pos + self.camera_pos[i])[None].expand(b, -1, -1))
        return torch.cat(tokens, dim=1), torch.cat(pos, dim=1)

    def forward(self, state: Tensor, env: Tensor | None, images: list[Tensor],
                actions: Tensor | None = None,
                action_is_pad: Tensor | None = None) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """state (B, D_s), env (B, N_obj * F) or None, images [(B, 3, H, W)] normalized.
        With actions (B, k, D_a) and the VAE enabled, z is sampled from the posterior; otherwise
        z = 0. Returns actions (B, k, D_a) normalized, mu, logvar (B, latent) or None."""
        b = state.shape[0]
        mu = logvar = None
        if self.cfg.use_vae and actions is not None:
            if action_is_pad is None:
                action_is_pad = torch.zeros(actions.shape[:2], dtype=torch.bool, device=actions.device)
            mu, logvar = self.posterior(state, actions, action_is_pad)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        else:
            z = torch.zeros(b, self.cfg.latent_dim, dtype=state.dtype, device=state.device)
        memory, memory_pos = self._memory(z, state, env, images)
        for layer in self.encoder:
            memory = layer(memory, memory_pos)
        memory = self.encoder_norm(memory)
        x = torch.zeros(b, self.cfg.chunk_size, self.cfg.dim_model, dtype=state.dtype,
                        device=state.device)
        for layer in self.decoder:
            x = layer(x, memory, self.query_pos, memory_pos)
        return self.action_head(self.decoder_norm(x)), mu, logvar


def kl_to_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over latent dims, averaged over the batch."""
    return (-0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp())).sum(dim=-1).mean()


class ACTPolicy(Policy):
    kind = "act"

    def __init__(self, cfg: ACTConfig, layout: FeatureLayout, normalizer: FeatureNormalizer) -> None:
        super().__init__(layout, normalizer, n_obs_steps=1, chunk_size=cfg.chunk_size,
                         n_action_steps=cfg.n_action_steps)
        self._cfg = cfg
        objects = layout.objects
        self.model = ACT(cfg, layout.state_dim, objects.num_slots if objects else 0,
                         objects.slot_dim if objects else 0, layout.action.dim,
                         len(layout.cameras), layout.image_size)

    @property
    def config(self) -> ACTConfig:
        return self._cfg

    def _inputs(self, obs: dict[str, Tensor]) -> tuple[Tensor, Tensor | None, list[Tensor]]:
        """Normalized network inputs from raw obs {feature: (B, 1, ...)}."""
        self.check_obs(obs)
        norm = self.normalize_obs(obs)
        env = norm[ENV_STATE_KEY][:, -1] if ENV_STATE_KEY in norm else None
        return norm[STATE_KEY][:, -1], env, [norm[k][:, -1] for k in self.layout.image_keys]

    def predict_chunk(self, obs: dict[str, Tensor]) -> Tensor:
        if self.training:
            raise RuntimeError("predict_chunk needs eval mode (dropout off): call .eval() first")
        state, env, images = self._inputs(obs)
        actions, _, _ = self.model(state, env, images)
        return self.normalizer.unnormalize(ACTION_KEY, actions)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        state, env, images = self._inputs(batch)
        target = self.normalizer.normalize(ACTION_KEY, batch[ACTION_KEY])  # (B, k, D_a)
        pad = batch[ACTION_PAD_KEY]  # (B, k)
        pred, mu, logvar = self.model(state, env, images, target, pad)
        valid = (~pad).unsqueeze(-1).to(pred.dtype)  # (B, k, 1)
        count = (valid.sum() * pred.shape[-1]).clamp(min=1.0)
        err = pred - target
        l1 = (err.abs() * valid).sum() / count
        loss = l1
        info = {"l1": l1.item()}
        if self.config.l2_weight > 0.0:
            l2 = (err.pow(2) * valid).sum() / count
            loss = loss + self.config.l2_weight * l2
            info["l2"] = l2.item()
        if mu is not None:
            kl = kl_to_standard_normal(mu, logvar)
            loss = loss + self.config.kl_weight * kl
            info["kl"] = kl.item()
        info["loss"] = loss.item()
        return loss, info

    def optimizer_groups(self) -> list[dict]:
        """Parameter groups: the image trunk may learn at its own rate."""
        trunk = [p for n, p in self.named_parameters() if n.startswith("model.backbone.")]
        rest = [p for n, p in self.named_parameters() if not n.startswith("model.backbone.")]
        groups = [{"params": rest, "lr": self.config.optimizer_lr}]
        if trunk:
            groups.append({"params": trunk, "lr": self.config.optimizer_lr_backbone})
        return groups
