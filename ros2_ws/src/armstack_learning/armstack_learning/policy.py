"""The one interface every learned policy implements, and the parts they share.

    reset()                  forget the observation history and queued actions (new episode)
    predict_chunk(obs)       obs {feature: (B, n_obs, ...)} raw units -> (B, k, D_a) raw actions
    select_action(obs_t)     obs_t {feature: (B, ...)} one step -> (B, D_a); keeps the history
                             and replans every n_action_steps (for offline evaluation and tests;
                             the robot runs the exported ONNX through ChunkBuffer instead)
    forward(batch)           training: dataset batch -> (loss, {name: float})

A policy owns its normalizer (buffers, exported with the weights) and its loss; the network
inside it is tensors in, tensors out on normalized values.
"""

from __future__ import annotations

import abc
import logging
from collections import deque
from typing import ClassVar

import torch
from torch import Tensor, nn

from armstack_learning.features import FeatureLayout
from armstack_learning.normalize import FeatureNormalizer

logger = logging.getLogger(__name__)


class Policy(nn.Module, abc.ABC):
    kind: ClassVar[str]

    def __init__(self, layout: FeatureLayout, normalizer: FeatureNormalizer, n_obs_steps: int,
                 chunk_size: int, n_action_steps: int) -> None:
        super().__init__()
        missing = [k for k in layout.input_keys + ["action"] if k not in normalizer]
        if missing:
            raise ValueError(f"normalizer lacks features {missing}")
        if not 1 <= n_action_steps <= chunk_size:
            raise ValueError(f"n_action_steps must be in [1, chunk_size={chunk_size}], "
                             f"got {n_action_steps}")
        self.layout = layout
        self.normalizer = normalizer
        self.n_obs_steps = n_obs_steps
        self.chunk_size = chunk_size
        self.n_action_steps = n_action_steps
        self._history: dict[str, deque[Tensor]] = {}
        self._queue: deque[Tensor] = deque()

    @property
    @abc.abstractmethod
    def config(self):  # noqa: ANN201 - each policy returns its own config dataclass
        """The policy's config dataclass (saved in checkpoints and the model card)."""

    @property
    def input_image_size(self) -> tuple[int, int] | None:
        """(H, W) of the camera images the network takes (the dataset's unless resized)."""
        return self.layout.image_size

    @abc.abstractmethod
    def predict_chunk(self, obs: dict[str, Tensor]) -> Tensor:
        """(B, chunk_size, D_a) actions in raw units; action 0 is for the newest observation."""

    @abc.abstractmethod
    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Training loss on a dataset batch and its parts as floats for logging."""

    def reset(self) -> None:
        self._history = {}
        self._queue = deque()

    @torch.no_grad()
    def select_action(self, obs_t: dict[str, Tensor]) -> Tensor:
        """One action (B, D_a) for the observation of this step (B, ...)."""
        for key in self.layout.input_keys:
            if key not in obs_t:
                raise KeyError(f"observation lacks {key!r}")
            hist = self._history.setdefault(key, deque(maxlen=self.n_obs_steps))
            while len(hist) < self.n_obs_steps - 1:  # first step: repeat it, as in training
                hist.append(obs_t[key])
            hist.append(obs_t[key])
        if not self._queue:
            obs = {k: torch.stack(list(h), dim=1) for k, h in self._history.items()}
            # inputs without a history (e.g. instruction tokens) pass through as given
            obs |= {k: v for k, v in obs_t.items() if k not in self._history}
            chunk = self.predict_chunk(obs)  # (B, k, D_a)
            self._queue.extend(chunk[:, : self.n_action_steps].unbind(dim=1))
        return self._queue.popleft()

    def normalize_obs(self, obs: dict[str, Tensor]) -> dict[str, Tensor]:
        """Raw observation features -> normalized, for the layout's inputs only."""
        return {k: self.normalizer.normalize(k, obs[k]) for k in self.layout.input_keys}

    def check_obs(self, obs: dict[str, Tensor]) -> int:
        """Batch size of an observation dict; raises on missing keys or a wrong history length."""
        for key in self.layout.input_keys:
            if key not in obs:
                raise KeyError(f"observation lacks {key!r}")
            if obs[key].shape[1] != self.n_obs_steps:
                raise ValueError(f"{key} has {obs[key].shape[1]} observation steps, the policy "
                                 f"takes {self.n_obs_steps} (shape (B, n_obs, ...))")
        return obs[self.layout.input_keys[0]].shape[0]
