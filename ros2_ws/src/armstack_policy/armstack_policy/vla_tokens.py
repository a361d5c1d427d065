"""The token contract of a vision-language-action policy: instruction words and action bins
(NumPy only; training and the runtime use these same definitions).

Vocabulary of armstack's VLA (ids):
    0 <pad>   fills the instruction to its fixed length
    1 <unk>   a word the model never saw in training
    2 <act>   ends the prefix; its output predicts the first action token
    3 ..      the instruction words (lower case, sorted), from the dataset's task strings
    then      one token per action bin: bin b of any action dimension is token bin_token_ids[b]

Actions (the RT-2 / OpenVLA scheme): every action dimension d is cut into `num_bins` uniform
bins over [low_d, high_d] (the dataset's min and max of that dimension). A value maps to the
bin holding it (values outside the range to the end bins); a bin decodes to its centre, so a
value inside the range comes back within half a bin width, (high_d - low_d) / (2 num_bins).
A chunk of k actions of D values is k * D tokens, time-major: a_0[0..D-1], a_1[0..D-1], ...
The k actions may be waypoints `stride` frames apart; armstack_policy.actions.upsample_waypoints
interpolates them linearly to the control rate ((k - 1) * stride + 1 rows).
The bin -> token map is an explicit table (`bin_token_ids`), so a model whose action tokens
are elsewhere in its vocabulary (OpenVLA uses the last 256 ids of the Llama vocabulary, in
descending order) fits the same contract.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

PAD, UNK, ACT = "<pad>", "<unk>", "<act>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, ACT)
PAD_ID, UNK_ID, ACT_ID = 0, 1, 2
DEFAULT_NUM_BINS = 256
_WORD = re.compile(r"[a-z0-9]+")


def split_words(text: str) -> list[str]:
    """Lower-case alphanumeric words of a text; punctuation and spacing carry no meaning."""
    return _WORD.findall(text.lower())


def vocabulary_from_texts(texts: Iterable[str]) -> tuple[str, ...]:
    """Sorted distinct words of the texts (the word part of a WordTokenizer's vocabulary)."""
    return tuple(sorted({w for t in texts for w in split_words(t)}))


class WordTokenizer:
    """Instruction text -> fixed-length token ids (see the module doc for the id layout)."""

    def __init__(self, words: Sequence[str], max_tokens: int) -> None:
        words = tuple(words)
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"WordTokenizer.max_tokens must be an int >= 1, got {max_tokens!r}")
        bad = [w for w in words if not isinstance(w, str) or split_words(w) != [w]]
        if bad:
            raise ValueError(f"WordTokenizer.words must be lower-case alphanumeric words, "
                             f"got {bad}")
        if len(set(words)) != len(words):
            raise ValueError("WordTokenizer.words has duplicates")
        self.words = words
        self.max_tokens = max_tokens
        self._ids = {w: len(SPECIAL_TOKENS) + i for i, w in enumerate(words)}

    @property
    def size(self) -> int:
        """Ids 0 .. size-1 are text tokens; action tokens come after them."""
        return len(SPECIAL_TOKENS) + len(self.words)

    def unknown_words(self, text: str) -> list[str]:
        return [w for w in split_words(text) if w not in self._ids]

    def id_of(self, word: str) -> int:
        """The id of one word (<unk> for a word not in the vocabulary)."""
        return self._ids.get(word, UNK_ID)

    def encode(self, text: str) -> np.ndarray:
        """(max_tokens,) int64 ids, padded with <pad>; unknown words become <unk>.

        Raises ValueError for an empty text or one longer than max_tokens words (cutting it
        would silently change the instruction)."""
        words = split_words(text)
        if not words:
            raise ValueError(f"instruction {text!r} has no words")
        if len(words) > self.max_tokens:
            raise ValueError(f"instruction {text!r} has {len(words)} words, the model takes at "
                             f"most {self.max_tokens}")
        ids = np.full(self.max_tokens, PAD_ID, dtype=np.int64)
        ids[: len(words)] = [self._ids.get(w, UNK_ID) for w in words]
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Words of text ids (pads dropped); for logs and tests."""
        names = (*SPECIAL_TOKENS, *self.words)
        return " ".join(names[i] for i in ids if i != PAD_ID)

    def to_dict(self) -> dict:
        return {"type": "word", "special_tokens": list(SPECIAL_TOKENS), "words": list(self.words),
                "max_tokens": self.max_tokens, "lowercase": True, "split": _WORD.pattern}

    @classmethod
    def from_dict(cls, raw: dict) -> WordTokenizer:
        if raw.get("type") != "word":
            raise ValueError(f"tokenizer.type must be 'word', got {raw.get('type')!r}")
        if list(raw.get("special_tokens", [])) != list(SPECIAL_TOKENS):
            raise ValueError(f"tokenizer.special_tokens must be {list(SPECIAL_TOKENS)}")
        return cls(tuple(raw["words"]), int(raw["max_tokens"]))


# Ranges stored as float32 (normalization buffers) can miss the data's extremes by rounding:
# values this far (relative to the range) outside it count as inside.
RANGE_RTOL = 1e-6


@dataclass(frozen=True)
class QuantizationError:
    """Per-dimension error of tokenizing actions and decoding them to bin centres."""

    max_abs: np.ndarray  # (D,)
    mean_abs: np.ndarray  # (D,)
    half_bin: np.ndarray  # (D,) the bound for values inside [low, high]
    clipped: np.ndarray  # (D,) count of values outside [low, high] (beyond RANGE_RTOL)
    tolerance: np.ndarray  # (D,) RANGE_RTOL of the range

    @property
    def within_half_bin(self) -> bool:
        """Every error is at most half a bin (up to the range's rounding tolerance)."""
        return bool((self.max_abs <= self.half_bin + self.tolerance).all())


class ActionBins:
    """Uniform bins per action dimension and their tokens (see the module doc)."""

    def __init__(self, low: Sequence[float], high: Sequence[float],
                 bin_token_ids: Sequence[int], num_bins: int = DEFAULT_NUM_BINS) -> None:
        self.low = np.asarray(low, dtype=np.float64)  # (D,)
        self.high = np.asarray(high, dtype=np.float64)  # (D,)
        self.token_ids = np.asarray(bin_token_ids, dtype=np.int64)  # (num_bins,)
        if self.low.ndim != 1 or self.low.shape != self.high.shape or self.low.size == 0:
            raise ValueError(f"ActionBins.low and high must be equal-length vectors, got shapes "
                             f"{self.low.shape} and {self.high.shape}")
        if not (np.isfinite(self.low).all() and np.isfinite(self.high).all()
                and (self.high > self.low).all()):
            raise ValueError("ActionBins needs finite ranges with high > low in every dimension")
        if not isinstance(num_bins, int) or num_bins < 2:
            raise ValueError(f"ActionBins.num_bins must be an int >= 2, got {num_bins!r}")
        if self.token_ids.shape != (num_bins,) or len(set(self.token_ids.tolist())) != num_bins \
                or (self.token_ids < 0).any():
            raise ValueError(f"ActionBins.bin_token_ids must be {num_bins} distinct ids >= 0")
        self.num_bins = num_bins
        self.width = (self.high - self.low) / num_bins  # (D,)
        # token id -> bin (-1: not an action token), for decoding
        self._bin_of = np.full(int(self.token_ids.max()) + 1, -1, dtype=np.int64)
        self._bin_of[self.token_ids] = np.arange(num_bins)

    @property
    def dim(self) -> int:
        return self.low.size

    def allowed_mask(self, vocab_size: int) -> np.ndarray:
        """(vocab_size,) bool, True at the action tokens: the only ids decoding may emit."""
        if self.token_ids.max() >= vocab_size:
            raise ValueError(f"action token ids reach {self.token_ids.max()}, beyond the "
                             f"vocabulary of {vocab_size}")
        mask = np.zeros(vocab_size, dtype=bool)
        mask[self.token_ids] = True
        return mask

    def to_bins(self, actions: np.ndarray) -> np.ndarray:
        """(..., D) raw actions -> (..., D) int64 bin indices."""
        actions = np.asarray(actions, dtype=np.float64)
        scaled = (actions - self.low) / (self.high - self.low) * self.num_bins
        return np.clip(np.floor(scaled), 0, self.num_bins - 1).astype(np.int64)

    def centres(self, bins: np.ndarray) -> np.ndarray:
        """(..., D) bin indices -> (..., D) float64 bin centres."""
        return self.low + (np.asarray(bins, dtype=np.float64) + 0.5) * self.width

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """(..., k, D) actions -> (..., k * D) token ids, time-major."""
        actions = np.asarray(actions)
        if actions.shape[-1] != self.dim:
            raise ValueError(f"actions have {actions.shape[-1]} values, the bins {self.dim}")
        tokens = self.token_ids[self.to_bins(actions)]
        return tokens.reshape(*actions.shape[:-2], -1)

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """(..., k * D) token ids -> (..., k, D) float32 actions (bin centres); raises
        ValueError if any id is not an action token."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.shape[-1] % self.dim:
            raise ValueError(f"{tokens.shape[-1]} tokens do not make whole actions of {self.dim}")
        inside = (tokens >= 0) & (tokens < self._bin_of.size)
        bins = np.where(inside, self._bin_of[np.clip(tokens, 0, self._bin_of.size - 1)], -1)
        if (bins < 0).any():
            bad = sorted(set(tokens[bins < 0].tolist()))[:5]
            raise ValueError(f"token ids {bad} are not action tokens")
        bins = bins.reshape(*tokens.shape[:-1], -1, self.dim)
        return self.centres(bins).astype(np.float32)

    def quantization_error(self, actions: np.ndarray) -> QuantizationError:
        """Error of actions (N, D) -> bins -> centres, per dimension."""
        actions = np.asarray(actions, dtype=np.float64).reshape(-1, self.dim)
        err = np.abs(self.centres(self.to_bins(actions)) - actions)  # (N, D)
        tol = RANGE_RTOL * (self.high - self.low)
        outside = (actions < self.low - tol) | (actions > self.high + tol)
        return QuantizationError(err.max(axis=0), err.mean(axis=0), self.width / 2.0,
                                 outside.sum(axis=0), tol)

    def to_dict(self) -> dict:
        return {"num_bins": self.num_bins, "low": self.low.tolist(), "high": self.high.tolist(),
                "bin_token_ids": self.token_ids.tolist(), "value": "bin centre",
                "order": "time-major: a_0[0..D-1], a_1[0..D-1], ..."}

    @classmethod
    def from_dict(cls, raw: dict) -> ActionBins:
        return cls(raw["low"], raw["high"], raw["bin_token_ids"], int(raw["num_bins"]))
