"""The VLA token contract: word tokenizer and uniform action bins (NumPy only)."""

import numpy as np
import pytest

from armstack_policy.vla_tokens import (
    ACT_ID,
    PAD_ID,
    UNK_ID,
    ActionBins,
    WordTokenizer,
    split_words,
    vocabulary_from_texts,
)

TASKS = ["Put the red cube in the bin.", "pick up the blue cube, and drop it in the bin"]


def test_vocabulary_is_the_sorted_words_of_the_tasks():
    assert split_words("Put the RED cube, in the bin!") == ["put", "the", "red", "cube", "in",
                                                            "the", "bin"]
    assert vocabulary_from_texts(TASKS) == ("and", "bin", "blue", "cube", "drop", "in", "it",
                                            "pick", "put", "red", "the", "up")


def test_tokenizer_ids_padding_and_unknown_words():
    tok = WordTokenizer(vocabulary_from_texts(TASKS), max_tokens=8)
    assert tok.size == 3 + 12
    ids = tok.encode("put the red cube in the bin")
    assert ids.dtype == np.int64 and ids.shape == (8,)
    assert list(ids[:7]) == [3 + 8, 3 + 10, 3 + 9, 3 + 3, 3 + 5, 3 + 10, 3 + 1]
    assert ids[7] == PAD_ID
    assert tok.decode(ids) == "put the red cube in the bin"
    green = tok.encode("put the green cube in the bin")
    assert green[2] == UNK_ID and tok.unknown_words("put the green cube") == ["green"]
    assert np.array_equal(tok.encode("PUT the red cube in the bin."), ids)  # case, punctuation
    with pytest.raises(ValueError, match="at most 8"):
        tok.encode("pick up the blue cube and drop it in the bin")
    with pytest.raises(ValueError, match="no words"):
        tok.encode(" ,. ")
    assert WordTokenizer.from_dict(tok.to_dict()).words == tok.words
    assert ACT_ID not in ids


@pytest.mark.parametrize("words, max_tokens, message", [
    (("Red",), 4, "lower-case"), (("red", "red"), 4, "duplicates"), (("red",), 0, "max_tokens"),
    (("red cube",), 4, "lower-case"),
])
def test_tokenizer_validation(words, max_tokens, message):
    with pytest.raises(ValueError, match=message):
        WordTokenizer(words, max_tokens)


def _bins(num_bins: int = 256) -> ActionBins:
    return ActionBins([0.1, -0.3, 0.0], [0.4, 0.2, 0.034], 20 + np.arange(num_bins), num_bins)


def test_bin_round_trip_is_within_half_a_bin():
    bins = _bins()
    rng = np.random.default_rng(0)
    actions = rng.uniform(bins.low, bins.high, size=(5000, 3))
    back = bins.centres(bins.to_bins(actions))
    assert (np.abs(back - actions) <= bins.width / 2 + 1e-12).all()
    err = bins.quantization_error(actions)
    assert err.within_half_bin and not err.clipped.any()
    assert np.allclose(err.half_bin, (bins.high - bins.low) / 512)
    assert (err.mean_abs < err.half_bin * 0.6).all()  # uniform error: mean is a quarter bin
    # the range ends map into the end bins, both within half a bin
    ends = np.stack([bins.low, bins.high])
    assert bins.to_bins(ends).tolist() == [[0, 0, 0], [255, 255, 255]]
    assert (np.abs(bins.centres(bins.to_bins(ends)) - ends) <= bins.width / 2 + 1e-12).all()


def test_values_outside_the_range_clip_to_the_end_bins_and_are_counted():
    bins = _bins()
    actions = np.array([[0.0, 0.0, 0.01], [0.5, 0.0, 0.01]])  # x below, then above the range
    assert bins.to_bins(actions)[:, 0].tolist() == [0, 255]
    err = bins.quantization_error(actions)
    assert err.clipped.tolist() == [2, 0, 0] and not err.within_half_bin


def test_tokens_are_time_major_and_decode_back():
    bins = _bins()
    chunk = np.array([[[0.1, -0.3, 0.0], [0.4, 0.2, 0.034]]])  # (1, k=2, D=3)
    tokens = bins.encode(chunk)
    assert tokens.tolist() == [[20, 20, 20, 275, 275, 275]]
    decoded = bins.decode(tokens)
    assert decoded.shape == (1, 2, 3) and decoded.dtype == np.float32
    assert np.allclose(decoded, chunk, atol=(bins.width / 2).max() + 1e-7)
    with pytest.raises(ValueError, match="not action tokens"):
        bins.decode(np.array([[20, 5, 20]]))
    with pytest.raises(ValueError, match="whole actions"):
        bins.decode(np.array([[20, 20]]))


def test_token_table_maps_bins_anywhere_in_the_vocabulary():
    # OpenVLA-style: the last ids of the vocabulary, in descending order
    vocab = 300
    bins = ActionBins([0.0], [1.0], vocab - 1 - np.arange(256))
    assert bins.encode(np.array([[[0.0]], [[0.999]]])).ravel().tolist() == [299, 44]
    mask = bins.allowed_mask(vocab)
    assert mask.sum() == 256 and mask[44:].all() and not mask[:44].any()
    with pytest.raises(ValueError, match="beyond the vocabulary"):
        bins.allowed_mask(200)
    again = ActionBins.from_dict(bins.to_dict())
    assert np.array_equal(again.token_ids, bins.token_ids)


@pytest.mark.parametrize("low, high, ids, message", [
    ([0.0], [0.0], np.arange(256), "high > low"),
    ([0.0, 1.0], [1.0], np.arange(256), "equal-length"),
    ([0.0], [1.0], np.zeros(256), "distinct"),
    ([0.0], [np.nan], np.arange(256), "finite"),
])
def test_bins_validation(low, high, ids, message):
    with pytest.raises(ValueError, match=message):
        ActionBins(low, high, ids)
