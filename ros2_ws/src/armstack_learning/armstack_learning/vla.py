"""A compact vision-language-action policy trained from scratch: camera patches, instruction
words and the joint state in, action tokens out (the RT-2 / OpenVLA recipe at CPU scale).

Sequence (one row per token, width dim_model):
    prefix   [patches of camera 0] ... [patches of camera C-1]   (C * N_p, ViT-style: a small
             strided conv stem FiLM-conditioned on the instruction's bag of words, then
             non-overlapping patches, one token each)
             [instruction tokens]                               (L, <pad>-filled, word ids)
             [objects]                                          (C, only with object slots:
                                                                 one per class, see below)
             [state]                                            (1, linear map of the
                                                                 normalized joint state, or
                                                                 a learnt "no state" token)
             [<act>]                                            (1, its output predicts a_0)
    actions  a_0 .. a_{N-2} as inputs (teacher forcing), N = chunk_size * D action tokens,
             time-major (armstack_policy.vla_tokens); the outputs at <act>, a_0, .. predict
             a_0 .. a_{N-1}.
Waypoints: the chunk_size predicted actions are action_stride frames apart (the actions of
frames t, t + s, t + 2s, ...); the chunk the runtime plays is their linear interpolation at the
dataset rate, (chunk_size - 1) * s + 1 rows (`horizon`). Every expert motion starts from rest
(min-jerk), so its first frames move less than a bin: a policy whose chunk spans only those
frames predicts "stay" and never leaves the start. Spreading the same number of tokens over
more time fixes that at no decoding cost.
Positions are one learned table over the whole sequence. Attention is prefix-LM: prefix tokens
see the whole prefix (bidirectional), action tokens see the prefix and earlier actions
(causal), so decoding caches the prefix once (`prefill`) and adds one token per `step`.
Pad tokens are attended like any other token: the instruction always has the same length, so
the model learns what they mean, and the graphs need no padding mask.

State dropout: on an expert's straight path the joint state alone tells where the arm is
heading, so a policy that sees it can fit the demonstrations without ever finding the named
cube in the image (measured here: the loss hardly changed when the image showed another scene
or the instruction named another colour), and then picks a direction at random at the start,
where the state says nothing. Training therefore replaces the state token by a learnt "no
state" token in a share (state_dropout) of the samples, which only the image and the
instruction can make up for (the remedy for copycat shortcuts of Wen et al. 2020). At run
time the state is used, unless state_dropout is 1 (never use it, as OpenVLA and RT-1 do).

Object tokens (optional: a layout with object slots, `train_policy.py --objects`): the
localized objects the perception stack publishes (observation.environment_state, x, y, z,
present per class in base_link, what ACT sees) enter as one token per class, a linear map of
its normalized slot plus a learnt class embedding. The instruction still chooses which object
to act on (the tokens carry no colour word, only their class's position in the prefix); the
images still come in. Learnt from the camera alone, the cube's position was the part a
CPU-trained model got wrong (it reached toward the named cube and closed beside it); the
detector measures it to millimetres. Without object slots the model is camera-only, as
OpenVLA and RT-2 are.

Object localization (training only): a dataset with observation.environment_state (the
recorder's object slots: x, y, z, present per class, in base_link) also supervises the patch
tokens. Attention-pooling heads read from them where each object class is and where the
object the instruction names is (the class whose distinguishing word, e.g. "red", is in it),
regressed in decimetres. Without it the patch features learnt to find the cubes, and the
instruction to pick one, far too slowly for a CPU budget: the action loss is a weak, late
signal for where a six-pixel cube is. The heads are not part of the exported graphs.

Loss: cross-entropy over the whole vocabulary at every action position that is not padding
past the episode end. The target is the true bin, or with bin_sigma > 0 a Gaussian over the
bins centred on the true value (the "HL-Gauss" soft target, Imani & White 2018; Farebrother et
al. 2024): a prediction one bin off is then nearly right instead of as wrong as any other,
which a small model trained briefly learns from much faster. Decoding still takes one bin. Decoding masks the logits to the action tokens (constrained decoding,
armstack_policy.vla_decode), greedy or with a temperature.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from armstack_policy.actions import upsample_waypoints, waypoint_frames
from armstack_policy.vla_decode import DecodeResult, decode_tokens
from armstack_policy.vla_tokens import (
    ACT_ID,
    ActionBins,
    WordTokenizer,
    split_words,
)
from torch import Tensor, nn

from armstack_learning.features import (
    ACTION_KEY,
    ACTION_PAD_KEY,
    ENV_STATE_KEY,
    LANGUAGE_KEY,
    STATE_KEY,
    FeatureLayout,
)
from armstack_learning.layers import Dropout
from armstack_learning.normalize import FeatureNormalizer
from armstack_learning.policy import Policy

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VLAConfig:
    """Architecture, tokenization and optimizer preset; validated on construction."""

    image_size: tuple[int, int] = (96, 128)  # (H, W) the network sees; frames are resized
    stem_channels: tuple[int, ...] = (16, 32, 64)  # 3x3 stride-2 convs before patchifying
    patch_size: int = 2  # on the stem's output: tokens cover 2^len(stem) * patch_size pixels
    # Sized to train on a shared 2-core CPU (~0.6 M parameters, ~20 samples/s on one thread)
    # and to decode a chunk well above the inference rate the chunk buffer needs.
    dim_model: int = 64
    n_heads: int = 4
    n_layers: int = 3
    dim_feedforward: int = 256
    dropout: float = 0.1
    # Waypoints per prediction: 6 x 8 ee values = 48 tokens, action_stride frames apart: at
    # 30 Hz a chunk spans 16 frames (0.53 s), replanned every n_action_steps frames (0.2 s) or as
    # fast as inference comes (async chunk buffer).
    chunk_size: int = 6
    action_stride: int = 3
    n_action_steps: int = 6
    num_bins: int = 256
    bin_sigma: float = 1.5  # std of the soft bin target, in bins; 0 = one-hot cross-entropy
    max_instruction_tokens: int = 12
    vocabulary: tuple[str, ...] = ()  # instruction words; empty = built from the dataset
    # px; training images shifted by up to this (pad + crop). Off by default: with a fixed
    # camera and absolute ee targets, a shifted image shows the cube where it is not, which
    # teaches the policy to miss by the shift.
    random_shift: int = 0
    state_dropout: float = 0.5  # share of training samples without the state (module doc)
    # Auxiliary object localization (module doc): its weight, and the object classes of the
    # dataset's observation.environment_state (empty = taken from the dataset; none = off).
    object_loss_weight: float = 1.0
    object_classes: tuple[str, ...] = ()
    optimizer_lr: float = 5e-4
    optimizer_weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        size = self.image_size
        if (not isinstance(size, (tuple, list)) or len(size) != 2
                or not all(isinstance(v, int) and v > 0 for v in size)):
            raise ValueError(f"VLAConfig.image_size must be (H, W) ints > 0, got {size!r}")
        for name in ("patch_size", "dim_model", "n_heads", "n_layers", "dim_feedforward",
                     "chunk_size", "action_stride", "n_action_steps",
                     "max_instruction_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"VLAConfig.{name} must be an int >= 1, got {value!r}")
        if not self.stem_channels or not all(isinstance(c, int) and c > 0
                                             for c in self.stem_channels):
            raise ValueError("VLAConfig.stem_channels must be ints > 0, got "
                             f"{self.stem_channels!r}")
        if any(v % self.stride for v in size):
            raise ValueError(f"VLAConfig.image_size {tuple(size)} must be divisible by the token "
                             f"stride {self.stride} (2^len(stem_channels) * patch_size)")
        if self.dim_model % self.n_heads:
            raise ValueError(f"VLAConfig.dim_model ({self.dim_model}) must be divisible by "
                             f"n_heads ({self.n_heads})")
        if self.n_action_steps > self.horizon:
            raise ValueError(f"VLAConfig.n_action_steps must be <= the chunk's {self.horizon} "
                             "frames ((chunk_size - 1) * action_stride + 1)")
        if not isinstance(self.num_bins, int) or self.num_bins < 2:
            raise ValueError(f"VLAConfig.num_bins must be an int >= 2, got {self.num_bins!r}")
        if not (isinstance(self.bin_sigma, (int, float)) and self.bin_sigma >= 0.0):
            raise ValueError(f"VLAConfig.bin_sigma must be >= 0, got {self.bin_sigma!r}")
        if not self.object_loss_weight >= 0.0:
            raise ValueError("VLAConfig.object_loss_weight must be >= 0, got "
                             f"{self.object_loss_weight!r}")
        if not 0.0 <= self.state_dropout <= 1.0:
            raise ValueError(f"VLAConfig.state_dropout must be in [0, 1], got "
                             f"{self.state_dropout!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"VLAConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.random_shift, int) or self.random_shift < 0:
            raise ValueError("VLAConfig.random_shift must be an int >= 0, got "
                             f"{self.random_shift!r}")
        WordTokenizer(self.vocabulary, self.max_instruction_tokens)  # raises on bad words
        if not self.optimizer_lr > 0.0 or not self.optimizer_weight_decay >= 0.0:
            raise ValueError("VLAConfig.optimizer_lr must be > 0 and optimizer_weight_decay >= 0")

    @property
    def horizon(self) -> int:
        """Frames the interpolated chunk covers: (chunk_size - 1) * action_stride + 1."""
        return waypoint_frames(self.chunk_size, self.action_stride)

    @property
    def stride(self) -> int:
        """Pixels per patch token along each axis."""
        return 2 ** len(self.stem_channels) * self.patch_size

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of patch tokens per camera."""
        return self.image_size[0] // self.stride, self.image_size[1] // self.stride

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> VLAConfig:
        values = dict(raw)
        for name in ("image_size", "stem_channels", "vocabulary", "object_classes"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


def prefix_lm_mask(prefix: int, total: int) -> Tensor:
    """(total, total) bool, True where query i may attend to key j: j in the prefix, or j <= i."""
    i = torch.arange(total)[:, None]
    j = torch.arange(total)[None, :]
    return (j < prefix) | (j <= i)


class _Attention(nn.Module):
    """Multi-head attention with an optional past cache. No dropout on the attention weights:
    on a CPU, drawing a (B, h, T, T) mask per layer cost more than the rest of the layer's
    forward pass; the residual and MLP dropouts regularize instead."""

    def __init__(self, dim: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None = None, past_k: Tensor | None = None,
                past_v: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, d); mask (T, T_past + T) bool allowed; past (B, h, T_past, dh).
        Returns out (B, T, d) and this layer's keys and values (B, h, T_past + T, dh)."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.n_heads, d // self.n_heads).permute(
            2, 0, 3, 1, 4)  # each (B, h, T, dh)
        if past_k is not None:
            k = torch.cat([past_k, k], dim=2)
            v = torch.cat([past_v, v], dim=2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, h, T, T_k)
        if mask is not None:
            scores = scores.masked_fill(~mask, -1e9)
        attn = torch.softmax(scores, dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, t, d)
        return self.out(out), k, v


class _Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, n_heads: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = _Attention(dim, n_heads)
        self.mlp = nn.Sequential(nn.Linear(dim, ff), nn.GELU(), Dropout(dropout),
                                 nn.Linear(ff, dim))
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None, past_k: Tensor | None = None,
                past_v: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        h, k, v = self.attn(self.norm1(x), mask, past_k, past_v)
        x = x + self.drop(h)
        return x + self.drop(self.mlp(self.norm2(x))), k, v


class PatchEmbed(nn.Module):
    """(B, 3, H, W) and the instruction's bag of words (B, W) -> (B, rows * cols, d): a strided
    conv stem whose every stage is FiLM-conditioned on the instruction, then one token per patch.

    The stem (early convolutions before the patchify step, Xiao et al. 2021) lets a token say
    where inside its patch a few-pixel cube sits, which a single linear patch map learns slowly
    from scratch. FiLM (Perez et al. 2018; RT-1 conditions its image encoder the same way)
    lets the instruction pick the features the patches carry, e.g. the named colour. Trained
    from scratch, the transformer alone never bound the colour word to a cube here (after 4000
    steps its loss did not change when the colour word did), nor did FiLM on the mean word
    embedding, where one colour word among seven or more is a faint signal. On the bag of
    words each word has its own FiLM column, learnt directly from the episodes naming it."""

    def __init__(self, cfg: VLAConfig, n_words: int) -> None:
        super().__init__()
        self.stages = nn.ModuleList()
        self.films = nn.ModuleList()
        c_in = 3
        for c in cfg.stem_channels:
            self.stages.append(nn.Sequential(nn.Conv2d(c_in, c, 3, 2, 1),
                                             nn.GroupNorm(max(1, c // 16), c), nn.GELU()))
            film = nn.Linear(n_words, 2 * c)
            nn.init.zeros_(film.weight)  # starts as the identity modulation
            nn.init.zeros_(film.bias)
            self.films.append(film)
            c_in = c
        self.patchify = nn.Conv2d(c_in, cfg.dim_model, cfg.patch_size, cfg.patch_size)

    def forward(self, image: Tensor, words: Tensor) -> Tensor:
        """image (B, 3, H, W) normalized, words (B, W) count of each text id in the
        instruction -> (B, rows * cols, d)."""
        x = image
        for stage, film in zip(self.stages, self.films, strict=True):
            gamma, beta = film(words)[:, :, None, None].chunk(2, dim=1)  # (B, c, 1, 1)
            x = stage(x) * (1.0 + gamma) + beta
        return self.patchify(x).flatten(2).transpose(1, 2)


class VLANet(nn.Module):
    """The network: tensors in, logits and key/value caches out (see the module doc)."""

    def __init__(self, cfg: VLAConfig, n_cameras: int, state_dim: int, vocab_size: int,
                 text_vocab: int, n_action_tokens: int, n_objects: int = 0,
                 slot_dim: int = 0) -> None:
        super().__init__()
        rows, cols = cfg.grid
        self.n_heads = cfg.n_heads
        self.n_objects, self.slot_dim = n_objects, slot_dim
        self.prefix_length = (n_cameras * rows * cols + cfg.max_instruction_tokens + n_objects
                              + 2)
        total = self.prefix_length + n_action_tokens - 1
        self.patches = PatchEmbed(cfg, text_vocab - 1)
        # text ids a bag of words counts: every one but <pad>
        self.register_buffer("word_ids", torch.arange(1, text_vocab), persistent=False)
        self.embed = nn.Embedding(vocab_size, cfg.dim_model)
        self.state_proj = nn.Linear(state_dim, cfg.dim_model)
        self.no_state = nn.Parameter(torch.randn(cfg.dim_model) * 0.02)
        if n_objects:
            self.object_proj = nn.Linear(slot_dim, cfg.dim_model)
            self.object_class = nn.Parameter(torch.randn(n_objects, cfg.dim_model) * 0.02)
        self.pos = nn.Parameter(torch.randn(total, cfg.dim_model) * 0.02)
        self.blocks = nn.ModuleList(_Block(cfg.dim_model, cfg.n_heads, cfg.dim_feedforward,
                                           cfg.dropout) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.dim_model)
        self.head = nn.Linear(cfg.dim_model, vocab_size)
        self.register_buffer("mask", prefix_lm_mask(self.prefix_length, total), persistent=False)
        self.register_buffer("act_id", torch.tensor([ACT_ID]), persistent=False)

    def prefix(self, images: Sequence[Tensor], tokens: Tensor, state: Tensor,
               state_missing: Tensor | None = None, objects: Tensor | None = None) -> Tensor:
        """images [(B, 3, H, W)], state (B, D_s) and objects (B, C * F) normalized, tokens
        (B, L) -> (B, P, d); state_missing (B,) bool puts the "no state" token in place of
        those samples' state. objects: required when the net has object slots, else None."""
        b = state.shape[0]
        bag = (tokens[..., None] == self.word_ids).sum(1).to(state.dtype)  # (B, W) word counts
        state_token = self.state_proj(state)  # (B, d)
        if state_missing is not None:
            state_token = torch.where(state_missing[:, None], self.no_state, state_token)
        parts = [self.patches(img, bag) for img in images]
        parts.append(self.embed(tokens))
        if self.n_objects:
            slots = objects.reshape(b, self.n_objects, self.slot_dim)
            parts.append(self.object_proj(slots) + self.object_class)  # (B, C, d)
        parts += [state_token[:, None], self.embed(self.act_id)[None].expand(b, -1, -1)]
        x = torch.cat(parts, dim=1)
        return x + self.pos[: x.shape[1]]

    def sequence_logits(self, prefix: Tensor, actions_in: Tensor) -> Tensor:
        """Without a cache: prefix (B, P, d), action tokens fed so far (B, n) -> logits
        (B, n + 1, V) at <act> and at each of them (the predictions of a_0 .. a_n)."""
        p, n = prefix.shape[1], actions_in.shape[1]
        x = torch.cat([prefix, self.embed(actions_in) + self.pos[p:p + n]], dim=1)
        mask = self.mask[: p + n, : p + n]
        for block in self.blocks:
            x, _, _ = block(x, mask)
        return self.head(self.norm(x[:, p - 1:]))

    def prefill(self, prefix: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """prefix (B, P, d) -> logits of a_0 (B, V), keys and values (n_layers, B, h, P, dh)."""
        x, keys, values = prefix, [], []
        for block in self.blocks:
            x, k, v = block(x)
            keys.append(k)
            values.append(v)
        return self.head(self.norm(x[:, -1])), torch.stack(keys), torch.stack(values)

    def step(self, token: Tensor, position: Tensor, past_k: Tensor,
             past_v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """token (B, 1) at sequence index position (1,), past (n_layers, B, h, T, dh) ->
        logits of the next token (B, V), keys and values (n_layers, B, h, T + 1, dh)."""
        x = self.embed(token) + self.pos[position][None]  # (B, 1, d)
        keys, values = [], []
        for i, block in enumerate(self.blocks):
            x, k, v = block(x, None, past_k[i], past_v[i])
            keys.append(k)
            values.append(v)
        return self.head(self.norm(x[:, -1])), torch.stack(keys), torch.stack(values)


class ObjectHead(nn.Module):
    """Patch tokens (B, N, d) -> (B, Q, 2) positions: one learnt query per object class and
    one for the named object, each an attention-weighted read of the patches."""

    def __init__(self, dim: int, n_queries: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(n_queries, dim) * 0.02)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, 2)

    def forward(self, patches: Tensor) -> Tensor:
        scores = self.queries @ self.key(patches).transpose(1, 2) / math.sqrt(patches.shape[-1])
        return self.out(torch.softmax(scores, dim=-1) @ self.value(patches))  # (B, Q, 2)


def distinguishing_words(classes: Sequence[str]) -> list[set[str]]:
    """Per class, the words of its name that no other class name has ("red_cube" -> {"red"})."""
    words = [set(split_words(c.replace("_", " "))) for c in classes]
    shared = set.intersection(*words) if words else set()
    return [w - shared for w in words]


def random_shift(images: Tensor, pad: int) -> Tensor:
    """(B, 3, H, W) each shifted by its own random offset in [-pad, pad] px, edges repeated
    (DrQ, Kostrikov et al. 2020). For a camera that may move between sessions; see
    VLAConfig.random_shift for why it is off by default."""
    if pad == 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    dy, dx = torch.randint(0, 2 * pad + 1, (2, b)).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])


class VLAPolicy(Policy):
    kind = "vla"

    def __init__(self, cfg: VLAConfig, layout: FeatureLayout,
                 normalizer: FeatureNormalizer) -> None:
        super().__init__(layout, normalizer, n_obs_steps=1, chunk_size=cfg.horizon,
                         n_action_steps=cfg.n_action_steps)
        if not layout.cameras:
            raise ValueError("a VLA policy needs at least one camera (FeatureLayout.cameras)")
        if not cfg.vocabulary:
            raise ValueError("VLAConfig.vocabulary is empty: build it from the dataset's tasks "
                             "(armstack_learning.factory.prepare_config)")
        self._cfg = cfg
        self.tokenizer = WordTokenizer(cfg.vocabulary, cfg.max_instruction_tokens)
        self.bin_offset = self.tokenizer.size
        self.vocab_size = self.tokenizer.size + cfg.num_bins
        self.n_action_tokens = cfg.chunk_size * layout.action.dim
        objects = layout.objects
        self.net = VLANet(cfg, len(layout.cameras), layout.state_dim, self.vocab_size,
                          self.tokenizer.size, self.n_action_tokens,
                          n_objects=objects.num_slots if objects else 0,
                          slot_dim=objects.slot_dim if objects else 0)
        self._instruction: Tensor | None = None  # (L,) from set_instruction
        self.object_head: ObjectHead | None = None
        classes = cfg.object_classes if cfg.object_loss_weight > 0.0 else ()
        if classes:
            self.object_head = ObjectHead(cfg.dim_model, len(classes) + 1)
            # (C, text vocab) which word ids name each class
            names = torch.zeros(len(classes), self.tokenizer.size, dtype=torch.bool)
            for c, words in enumerate(distinguishing_words(classes)):
                ids = [self.tokenizer.id_of(w) for w in words if w in cfg.vocabulary]
                names[c, ids] = True
            self.register_buffer("class_words", names, persistent=False)

    @property
    def config(self) -> VLAConfig:
        return self._cfg

    @property
    def input_image_size(self) -> tuple[int, int]:
        return tuple(self._cfg.image_size)

    @property
    def prefix_length(self) -> int:
        return self.net.prefix_length

    def action_bins(self) -> ActionBins:
        """The bins: [offset - scale, offset + scale] of the min/max action normalization."""
        affine = self.normalizer[ACTION_KEY]
        offset, scale = affine.offset.double().numpy(), affine.scale.double().numpy()
        ids = self.bin_offset + np.arange(self._cfg.num_bins)
        return ActionBins(offset - scale, offset + scale, ids, self._cfg.num_bins)

    def set_instruction(self, text: str) -> None:
        """Instruction used by predict_chunk when the observation carries no tokens."""
        unknown = self.tokenizer.unknown_words(text)
        if unknown:
            logger.warning("instruction words %s were not in the training tasks", unknown)
        self._instruction = torch.from_numpy(self.tokenizer.encode(text))

    def _bin_position(self, actions: Tensor) -> Tensor:
        """Raw actions (B, k, D) -> (B, k * D) float64 position in bin units (bin b spans
        [b, b + 1))."""
        affine = self.normalizer[ACTION_KEY]
        low, high = affine.offset.double() - affine.scale, affine.offset.double() + affine.scale
        return ((actions.double() - low) / (high - low) * self._cfg.num_bins).flatten(1)

    def action_tokens(self, actions: Tensor) -> Tensor:
        """Raw actions (B, k, D) -> token ids (B, k * D), as ActionBins.encode computes them."""
        bins = self._bin_position(actions).floor().clamp(0, self._cfg.num_bins - 1).long()
        return bins + self.bin_offset

    def _soft_targets(self, actions: Tensor) -> Tensor:
        """(B, N, num_bins) Gaussian over the bins around each true value (see the module doc);
        a value outside the range counts as its end bin."""
        n = self._cfg.num_bins
        centre = (self._bin_position(actions) - 0.5).clamp(0, n - 1)  # (B, N) in bin-index units
        index = torch.arange(n, dtype=torch.float64, device=actions.device)
        weight = torch.exp(-0.5 * ((index - centre[..., None]) / self._cfg.bin_sigma) ** 2)
        return (weight / weight.sum(-1, keepdim=True)).to(actions.dtype)

    def prefix_embeddings(self, obs: dict[str, Tensor], augment: bool = False) -> Tensor:
        """(B, P, d) from raw observations {feature: (B, 1, ...)} and language tokens (B, L)."""
        b = self.check_obs(obs)
        norm = self.normalize_obs(obs)
        images = [norm[k][:, -1] for k in self.layout.image_keys]
        if augment:
            images = [random_shift(img, self._cfg.random_shift) for img in images]
        tokens = obs.get(LANGUAGE_KEY)
        if tokens is None:
            if self._instruction is None:
                raise ValueError(f"no instruction: the observation has no {LANGUAGE_KEY!r} and "
                                 "set_instruction was not called")
            tokens = self._instruction[None].expand(b, -1)
        state = norm[STATE_KEY][:, -1]
        missing = None  # (B,) bool: samples that go without the state
        if self._cfg.state_dropout == 1.0:
            missing = torch.ones_like(state[:, 0], dtype=torch.bool)  # batch-size free in ONNX
        elif augment and self._cfg.state_dropout > 0.0:
            missing = torch.rand(b, device=state.device) < self._cfg.state_dropout
        objects = norm[ENV_STATE_KEY][:, -1] if self.layout.objects else None  # (B, C * F)
        return self.net.prefix(images, tokens.long(), state, missing, objects)

    def object_loss(self, patches: Tensor, tokens: Tensor, env: Tensor) -> Tensor:
        """Localization loss (module doc): patches (B, N, d), instruction tokens (B, L),
        environment state (B, C * 4) of x, y, z, present per class."""
        b, n = env.shape[0], len(self._cfg.object_classes)
        slots = env.reshape(b, n, 4)
        xy, present = slots[..., :2] * 10.0, slots[..., 3] > 0.5  # decimetres (B, C, 2), (B, C)
        pred = self.object_head(patches)  # (B, C + 1, 2)
        err = (pred[:, :n] - xy).pow(2).sum(-1)  # (B, C)
        loss = (err * present).sum() / present.sum().clamp(min=1)
        said = torch.zeros(b, self.tokenizer.size, dtype=torch.bool, device=tokens.device)
        said.scatter_(1, tokens.clamp(max=self.tokenizer.size - 1), True)  # (B, text vocab)
        named = (said[:, None, :] & self.class_words).any(-1) & present  # (B, C)
        one = named.sum(-1) == 1  # samples whose instruction names exactly one present class
        target = (named[..., None] * xy).sum(1)  # (B, 2)
        named_err = (pred[:, n] - target).pow(2).sum(-1)
        return loss + (named_err * one).sum() / one.sum().clamp(min=1)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        prefix = self.prefix_embeddings(batch, augment=self.training)
        target = self.action_tokens(batch[ACTION_KEY])  # (B, N)
        logits = self.net.sequence_logits(prefix, target[:, :-1])  # (B, N, V)
        dim = self.layout.action.dim
        valid = (~batch[ACTION_PAD_KEY]).repeat_interleave(dim, dim=1)  # (B, N)
        if self._cfg.bin_sigma > 0.0:
            log_p = torch.log_softmax(logits, dim=-1)[..., self.bin_offset:]  # (B, N, bins)
            ce = -(self._soft_targets(batch[ACTION_KEY]) * log_p).sum(-1)  # (B, N)
        else:
            ce = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # (B, N)
        count = valid.sum().clamp(min=1)
        loss = (ce * valid).sum() / count
        extra = {}
        if self.object_head is not None and ENV_STATE_KEY in batch:
            rows, cols = self._cfg.grid
            patches = prefix[:, : len(self.layout.cameras) * rows * cols]
            env = batch[ENV_STATE_KEY]
            env = env[:, -1] if env.ndim == 3 else env  # (B, n_obs, C*F) when also an input
            obj = self.object_loss(patches, batch[LANGUAGE_KEY], env)
            extra["object_loss"] = obj.item()
            extra["action_loss"] = loss.item()
            loss = loss + self._cfg.object_loss_weight * obj
        with torch.no_grad():
            bins = logits[..., self.bin_offset:].argmax(-1)  # (B, N) teacher-forced best bins
            hit = ((bins + self.bin_offset) == target) & valid
            width = (self.normalizer[ACTION_KEY].scale * 2.0 / self._cfg.num_bins).repeat(
                self._cfg.chunk_size)  # (N,) bin width per token
            err = (bins - (target - self.bin_offset)).abs() * width * valid
        return loss, {"loss": loss.item(), "token_accuracy": (hit.sum() / count).item(),
                      "action_abs_error": (err.sum() / count).item(), **extra}

    @torch.no_grad()
    def decode(self, obs: dict[str, Tensor], temperature: float = 0.0,
               rng: np.random.Generator | None = None, use_cache: bool = True) -> DecodeResult:
        """Constrained decoding of the action tokens (the runtime's loop, over torch)."""
        if self.training:
            raise RuntimeError("decode needs eval mode (dropout off): call .eval() first")
        prefix = self.prefix_embeddings(obs)
        allowed = self.action_bins().allowed_mask(self.vocab_size)
        p = self.prefix_length
        if use_cache:
            def prefill() -> tuple[np.ndarray, tuple[Tensor, Tensor]]:
                logits, k, v = self.net.prefill(prefix)
                return logits.numpy(), (k, v)

            def step(token: np.ndarray, position: int,
                     cache: tuple[Tensor, Tensor]) -> tuple[np.ndarray, tuple[Tensor, Tensor]]:
                logits, k, v = self.net.step(torch.from_numpy(token),
                                             torch.tensor([position]), *cache)
                return logits.numpy(), (k, v)
        else:
            def prefill() -> tuple[np.ndarray, Tensor]:
                empty = torch.zeros(prefix.shape[0], 0, dtype=torch.long)
                return self.net.sequence_logits(prefix, empty)[:, -1].numpy(), empty

            def step(token: np.ndarray, position: int, fed: Tensor) -> tuple[np.ndarray, Tensor]:
                fed = torch.cat([fed, torch.from_numpy(token)], dim=1)
                return self.net.sequence_logits(prefix, fed)[:, -1].numpy(), fed
        return decode_tokens(prefill, step, self.n_action_tokens, allowed, p, temperature, rng)

    def predict_chunk(self, obs: dict[str, Tensor], temperature: float = 0.0,
                      rng: np.random.Generator | None = None) -> Tensor:
        """(B, horizon, D) raw actions at the dataset rate, interpolated between waypoints."""
        result = self.decode(obs, temperature, rng)
        waypoints = self.action_bins().decode(result.tokens)  # (B, chunk_size, D)
        return torch.from_numpy(upsample_waypoints(waypoints, self._cfg.action_stride))

    def optimizer_groups(self) -> list[dict]:
        """AdamW groups: no weight decay on norms, biases, embeddings and positions."""
        decay, plain = [], []
        for name, p in self.named_parameters():
            no_decay = p.ndim < 2 or name.startswith(("net.embed.", "net.pos", "net.no_state"))
            (plain if no_decay else decay).append(p)
        return [{"params": decay, "lr": self._cfg.optimizer_lr},
                {"params": plain, "lr": self._cfg.optimizer_lr, "weight_decay": 0.0}]
