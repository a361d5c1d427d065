"""The VLA policy in torch: config, vocabulary, samples with instructions, action tokens,
prefix-LM attention, KV cache vs no cache, constrained decoding and a short overfit."""

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training dependencies (requirements-train.txt)")

from armstack_learning.data import ChunkDataset, WindowConfig  # noqa: E402
from armstack_learning.factory import (  # noqa: E402
    build_policy,
    config_with_overrides,
    placeholder_normalizer,
    prepare_config,
)
from armstack_learning.features import (  # noqa: E402
    ACTION_KEY,
    ACTION_PAD_KEY,
    ENV_STATE_KEY,
    LANGUAGE_KEY,
    ObjectSlotsConfig,
)
from armstack_learning.vla import VLAConfig, prefix_lm_mask, random_shift  # noqa: E402
from armstack_policy.vla_tokens import WordTokenizer  # noqa: E402


def _batch(ds, indices):
    items = [ds[i] for i in indices]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def _obs(batch):
    return {k: v for k, v in batch.items() if k not in (ACTION_KEY, ACTION_PAD_KEY)}


@pytest.mark.parametrize("overrides, field", [
    ({"image_size": (30, 32)}, "VLAConfig.image_size"),
    ({"action_stride": 0}, "VLAConfig.action_stride"),
    ({"chunk_size": 3, "action_stride": 2, "n_action_steps": 6}, "VLAConfig.n_action_steps"),
    ({"dim_model": 30, "n_heads": 4}, "VLAConfig.dim_model"),
    ({"n_action_steps": 9, "chunk_size": 8, "action_stride": 1}, "VLAConfig.n_action_steps"),
    ({"num_bins": 1}, "VLAConfig.num_bins"),
    ({"vocabulary": ("Red",)}, "WordTokenizer.words"),
])
def test_config_validation_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        VLAConfig(**overrides)


def test_config_overrides_and_vocabulary_from_the_tasks(vla_dataset_root):
    cfg = config_with_overrides("vla", {"image_size": "[32, 64]", "chunk_size": "4"})
    assert cfg.image_size == (32, 64) and cfg.chunk_size == 4 and cfg.vocabulary == ()
    cfg = prepare_config("vla", cfg, vla_dataset_root)
    assert cfg.vocabulary == ("bin", "blue", "cube", "in", "put", "red", "the")
    kept = prepare_config("vla", dataclasses.replace(cfg, vocabulary=("red",)), vla_dataset_root)
    assert kept.vocabulary == ("red",)  # a given vocabulary is not replaced
    with pytest.raises(ValueError, match="max_instruction_tokens"):
        prepare_config("vla", dataclasses.replace(cfg, max_instruction_tokens=6), vla_dataset_root)


def test_samples_carry_the_task_tokens_at_the_policy_image_size(vla_dataset_root, vla_layout):
    tok = WordTokenizer(("bin", "blue", "cube", "in", "put", "red", "the"), 8)
    window = WindowConfig(1, 3)
    lazy = ChunkDataset(vla_dataset_root, vla_layout, window, image_size=(16, 16),
                        tokenize=tok.encode)
    eager = ChunkDataset(vla_dataset_root, vla_layout, window, image_size=(16, 16),
                         preload_images=True, tokenize=tok.encode)
    for t in (0, 13, len(lazy) - 1):
        a, b = lazy[t], eager[t]
        assert a["observation.images.color"].shape == (1, 3, 16, 16)
        assert torch.equal(a["observation.images.color"], b["observation.images.color"])
        assert np.array_equal(a[LANGUAGE_KEY].numpy(), tok.encode(lazy.task(t)))
    assert lazy.task(0) == "put the red cube in the bin"
    strided = ChunkDataset(vla_dataset_root, vla_layout, WindowConfig(1, 3, action_stride=4))
    actions = np.asarray(strided.reader.columns[ACTION_KEY])
    item = strided[5]  # frames 5, 9, then past the episode end (12 frames): padded
    assert np.allclose(item[ACTION_KEY].numpy(), actions[[5, 9, 11]])
    assert item[ACTION_PAD_KEY].tolist() == [False, False, True]
    assert lazy.task(12) == "put the blue cube in the bin"


def test_policy_rejects_a_missing_vocabulary_and_a_layout_without_cameras(
        vla_layout, tiny_vla_config, make_vla, vla_dataset_root):
    no_camera = dataclasses.replace(vla_layout, cameras=(), objects=ObjectSlotsConfig())
    with pytest.raises(ValueError, match="at least one camera"):
        build_policy("vla", tiny_vla_config(), no_camera, placeholder_normalizer(no_camera))
    with pytest.raises(ValueError, match="vocabulary is empty"):
        make_vla(dataclasses.replace(tiny_vla_config(), vocabulary=()), vla_dataset_root,
                 vla_layout)


def test_action_tokens_match_the_runtime_bins(tiny_vla_config, make_vla, vla_dataset_root,
                                              vla_layout):
    policy, ds = make_vla(tiny_vla_config(), vla_dataset_root, vla_layout)
    actions = _batch(ds, range(0, len(ds), 5))[ACTION_KEY]  # (B, k, D)
    bins = policy.action_bins()
    assert np.array_equal(policy.action_tokens(actions).numpy(), bins.encode(actions.numpy()))
    # every recorded action comes back within half a bin
    err = bins.quantization_error(actions.numpy().reshape(-1, 8))
    assert err.within_half_bin and not err.clipped.any()
    assert policy.vocab_size == 3 + 7 + 256 and policy.bin_offset == 10


def test_prefix_lm_attention(tiny_vla_config, make_vla, vla_dataset_root, vla_layout):
    mask = prefix_lm_mask(3, 6)
    assert mask[:3, :3].all()  # the prefix sees itself both ways
    assert not mask[:3, 3:].any()  # but no action token
    assert mask[3, :4].all() and not mask[3, 4:].any() and mask[5].all()  # actions: causal
    policy, ds = make_vla(tiny_vla_config(), vla_dataset_root, vla_layout)
    policy.eval()
    batch = _batch(ds, [0, 20])
    prefix = policy.prefix_embeddings(_obs(batch))
    tokens = policy.action_tokens(batch[ACTION_KEY])  # (2, N)
    with torch.no_grad():
        base = policy.net.sequence_logits(prefix, tokens[:, :-1])
        later = tokens.clone()
        later[:, 5] = policy.bin_offset + 7
        changed = policy.net.sequence_logits(prefix, later[:, :-1])
    # position i predicts token i from tokens < i: changing token 5 leaves 0..5 alone
    assert torch.equal(base[:, :6], changed[:, :6])
    assert not torch.allclose(base[:, 6:], changed[:, 6:])


def test_kv_cache_decode_equals_full_recomputation(tiny_vla_config, make_vla, vla_dataset_root,
                                                   vla_layout):
    policy, ds = make_vla(tiny_vla_config(n_layers=2, chunk_size=3), vla_dataset_root, vla_layout,
                          seed=3)
    policy.eval()
    obs = _obs(_batch(ds, [1, 30]))
    cached = policy.decode(obs)
    full = policy.decode(obs, use_cache=False)
    assert np.array_equal(cached.tokens, full.tokens)
    assert np.abs(cached.logits - full.logits).max() < 1e-5
    assert cached.tokens.shape == (2, 3 * 8)


def test_decoding_is_constrained_to_action_tokens(tiny_vla_config, make_vla, vla_dataset_root,
                                                  vla_layout):
    policy, ds = make_vla(tiny_vla_config(), vla_dataset_root, vla_layout)
    policy.eval()
    with torch.no_grad():
        policy.net.head.bias[4] += 100.0  # a word token now dominates every position
    obs = _obs(_batch(ds, [0]))
    result = policy.decode(obs)
    assert (result.logits.argmax(-1) == 4).all()  # unconstrained it would emit the word
    assert (result.tokens >= policy.bin_offset).all()
    sampled = policy.decode(obs, temperature=1.0, rng=np.random.default_rng(0))
    assert (sampled.tokens >= policy.bin_offset).all()
    chunk = policy.predict_chunk(obs).numpy()
    assert chunk.shape == (1, 3, 8)  # 2 waypoints 2 frames apart, interpolated
    bins = policy.action_bins()
    assert (chunk >= bins.low - 1e-6).all() and (chunk <= bins.high + 1e-6).all()
    waypoints = bins.decode(result.tokens)[0]  # (2, 8)
    assert np.allclose(chunk[0, [0, 2]], waypoints)
    assert np.allclose(chunk[0, 1], waypoints.mean(axis=0))


def test_instruction_from_set_instruction_or_the_observation(tiny_vla_config, make_vla,
                                                             vla_dataset_root, vla_layout):
    policy, ds = make_vla(tiny_vla_config(), vla_dataset_root, vla_layout)
    policy.eval()
    obs = _obs(_batch(ds, [0]))
    tokens = obs.pop(LANGUAGE_KEY)
    with pytest.raises(ValueError, match="no instruction"):
        policy.decode(obs)
    policy.set_instruction(ds.task(0))
    from_text = policy.decode(obs)
    from_obs = policy.decode(obs | {LANGUAGE_KEY: tokens})
    assert np.array_equal(from_text.tokens, from_obs.tokens)


def test_random_shift_moves_whole_images_within_the_pad():
    torch.manual_seed(0)
    images = torch.zeros(8, 3, 16, 16)
    images[:, :, 8, 8] = 1.0
    shifted = random_shift(images, 2)
    assert shifted.shape == images.shape
    for img in shifted:
        ys, xs = torch.nonzero(img[0], as_tuple=True)
        assert len(ys) == 1 and abs(int(ys[0]) - 8) <= 2 and abs(int(xs[0]) - 8) <= 2
    assert torch.equal(random_shift(images, 0), images)


@pytest.mark.parametrize("bin_sigma", [0.0, 1.5])
def test_tiny_model_overfits(tiny_vla_config, make_vla, vla_dataset_root, vla_layout, bin_sigma):
    policy, ds = make_vla(tiny_vla_config(bin_sigma=bin_sigma), vla_dataset_root, vla_layout)
    batch = _batch(ds, range(0, len(ds), 6))  # 8 samples from all 4 episodes
    floor = 0.0  # the loss of a perfect fit: the entropy of the (soft) targets
    if bin_sigma > 0:
        soft = policy._soft_targets(batch[ACTION_KEY])
        valid = ~batch[ACTION_PAD_KEY].repeat_interleave(8, dim=1)
        floor = float(-(soft * soft.clamp(min=1e-12).log()).sum(-1)[valid].mean())
    opt = torch.optim.AdamW(policy.optimizer_groups(), weight_decay=0.0)
    policy.train()
    infos = []
    for _ in range(60):
        loss, info = policy(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        infos.append(info)
    first, last = infos[0], infos[-1]
    assert last["loss"] - floor < 0.3 * (first["loss"] - floor), (floor, first, last)
    assert last["token_accuracy"] > first["token_accuracy"] + 0.3
    assert last["action_abs_error"] < 0.5 * first["action_abs_error"]


def test_training_loop_checkpoints_and_resumes_a_vla_exactly(tmp_path, vla_dataset_root,
                                                             vla_layout, tiny_vla_config):
    """train.py's loop with the VLA's samples: the checkpoint carries the vocabulary built
    from the tasks, and a resumed run ends bit for bit where an uninterrupted one does
    (dropout and the image shift draw from the restored RNG)."""
    from armstack_learning.factory import policy_from_checkpoint
    from armstack_learning.train import TrainConfig, train

    cfg = dataclasses.replace(tiny_vla_config(dropout=0.1, random_shift=2, state_dropout=0.5),
                              vocabulary=())

    def run(out, stop_at=None, resume=False):  # noqa: ANN001, ANN202
        tc = TrainConfig(policy="vla", dataset=str(vla_dataset_root), out=str(out), steps=4,
                         batch_size=4, save_every=100, log_every=2, stop_at=stop_at)
        return train(tc, cfg, vla_layout, resume=resume)

    straight = run(tmp_path / "a")
    run(tmp_path / "b", stop_at=2)
    resumed = run(tmp_path / "b", resume=True)
    a, b = (torch.load(p, weights_only=False) for p in (straight, resumed))
    assert a["step"] == b["step"] == 4
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["policy_config"]["vocabulary"] == ["bin", "blue", "cube", "in", "put", "red", "the"]
    policy, _ = policy_from_checkpoint(straight)
    assert policy.kind == "vla" and policy.tokenizer.size == 10


def test_film_lets_the_instruction_shape_the_patch_tokens(tiny_vla_config, make_vla,
                                                         vla_dataset_root, vla_layout):
    policy, ds = make_vla(tiny_vla_config(), vla_dataset_root, vla_layout)
    policy.eval()
    obs = _obs(_batch(ds, [0]))
    red = obs[LANGUAGE_KEY]
    blue = torch.from_numpy(policy.tokenizer.encode("put the blue cube in the bin"))[None]
    patches = policy.config.grid[0] * policy.config.grid[1]

    def tokens(instruction):  # noqa: ANN001, ANN202 - (1, patches, d)
        with torch.no_grad():
            return policy.prefix_embeddings(obs | {LANGUAGE_KEY: instruction})[:, :patches]

    assert torch.equal(tokens(red), tokens(blue))  # FiLM starts as the identity
    with torch.no_grad():
        for film in policy.net.patches.films:
            film.weight.normal_()
    assert not torch.allclose(tokens(red), tokens(blue))


def test_training_frames_are_resized_as_the_policy_node_resizes_camera_frames():
    from armstack_learning.data import resize_frames
    from armstack_policy.observation import image_feature

    rgb = np.random.default_rng(0).integers(0, 256, (2, 480, 640, 3), dtype=np.uint8)
    ours = resize_frames(rgb, (96, 128))  # (2, 96, 128, 3) uint8
    for frame, small in zip(rgb, ours, strict=True):
        node = image_feature(frame, (96, 128))  # (3, 96, 128) float in [0, 1]
        assert np.array_equal(small.transpose(2, 0, 1).astype(np.float32) / 255.0, node)


def test_soft_bin_targets(tiny_vla_config, make_vla, vla_dataset_root, vla_layout):
    policy, ds = make_vla(tiny_vla_config(bin_sigma=1.5), vla_dataset_root, vla_layout)
    batch = _batch(ds, [0, 20])
    soft = policy._soft_targets(batch[ACTION_KEY])  # (2, N, 256)
    assert torch.allclose(soft.sum(-1), torch.ones(soft.shape[:2]))
    peak = soft.argmax(-1) + policy.bin_offset
    assert (peak - policy.action_tokens(batch[ACTION_KEY])).abs().max() <= 1
    # bin_sigma 0 is the plain cross-entropy with the true bin
    hard, _ = make_vla(tiny_vla_config(bin_sigma=0.0), vla_dataset_root, vla_layout)
    hard.eval()
    loss, _ = hard(batch)
    target = hard.action_tokens(batch[ACTION_KEY])
    logits = hard.net.sequence_logits(hard.prefix_embeddings(_obs(batch)), target[:, :-1])
    valid = ~batch[ACTION_PAD_KEY].repeat_interleave(8, dim=1)
    want = torch.nn.functional.cross_entropy(logits[valid], target[valid])
    assert torch.allclose(loss, want, atol=1e-6)


def test_state_dropout_in_training_and_never_state_at_one(tiny_vla_config, make_vla,
                                                          vla_dataset_root, vla_layout):
    policy, ds = make_vla(tiny_vla_config(state_dropout=0.5), vla_dataset_root, vla_layout)
    obs = _obs(_batch(ds, list(range(0, 48, 2))))
    state_at = policy.prefix_length - 2
    no_state = policy.net.no_state.detach()
    torch.manual_seed(0)
    with torch.no_grad():
        trained = policy.prefix_embeddings(obs, augment=True)[:, state_at]
        used = policy.prefix_embeddings(obs)[:, state_at]  # run time: the state is used
    pos = policy.net.pos[state_at].detach()
    dropped = torch.isclose(trained, no_state + pos).all(-1)
    assert 0 < int(dropped.sum()) < len(dropped)
    assert not torch.isclose(used, no_state + pos).all(-1).any()
    never, _ = make_vla(tiny_vla_config(state_dropout=1.0), vla_dataset_root, vla_layout)
    with torch.no_grad():
        tokens = never.prefix_embeddings(obs)[:, state_at]
    assert torch.isclose(tokens, never.net.no_state + never.net.pos[state_at]).all()


def test_object_localization_loss(tiny_vla_config, make_vla, vla_dataset_root, vla_layout):
    cfg = tiny_vla_config(object_loss_weight=1.0)
    assert cfg.object_classes == ("red_cube", "blue_cube")  # from the dataset's object slots
    policy, ds = make_vla(cfg, vla_dataset_root, vla_layout)
    assert policy.class_words[:, policy.tokenizer.id_of("red")].tolist() == [True, False]
    assert not policy.class_words[:, policy.tokenizer.id_of("cube")].any()  # shared word
    batch = _batch(ds, range(0, len(ds), 6))
    assert batch["observation.environment_state"].shape == (8, 8)
    # the named-object query is scored against the cube the instruction names
    env = torch.tensor([[0.2, 0.1, 0.015, 1.0, 0.3, -0.1, 0.015, 1.0]])
    tokens = torch.from_numpy(policy.tokenizer.encode("put the blue cube in the bin"))[None]
    patches = torch.zeros(1, 4, policy.config.dim_model)
    with torch.no_grad():
        policy.object_head.out.weight.zero_()
        policy.object_head.out.bias.copy_(torch.tensor([3.0, -1.0]))  # every query says blue
        loss = policy.object_loss(patches, tokens, env)
    # red query off by (1, 2) dm, blue exact: class loss 5 / 2 present; named (blue) exact
    assert loss.item() == pytest.approx(2.5)
    opt = torch.optim.AdamW(policy.optimizer_groups(), weight_decay=0.0)
    policy.train()
    infos = []
    for _ in range(40):
        loss, info = policy(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        infos.append(info)
    assert infos[-1]["object_loss"] < 0.5 * infos[0]["object_loss"]
    assert infos[-1]["loss"] == pytest.approx(infos[-1]["action_loss"]
                                              + infos[-1]["object_loss"], rel=1e-5)


def test_object_tokens_carry_each_localized_object(tiny_vla_config, make_vla, vla_dataset_root,
                                                   vla_layout):
    """With object slots in the layout, one prefix token per class, fed by that class's slot
    only, and trained through the action loss."""
    objects = ObjectSlotsConfig(("red_cube", "blue_cube"))
    layout = dataclasses.replace(vla_layout, objects=objects)
    cameras_only, _ = make_vla(tiny_vla_config(), vla_dataset_root, vla_layout)
    policy, ds = make_vla(tiny_vla_config(), vla_dataset_root, layout)
    assert policy.prefix_length == cameras_only.prefix_length + 2
    batch = _batch(ds, range(0, len(ds), 6))
    assert batch[ENV_STATE_KEY].shape == (8, 1, 8)
    policy.eval()
    moved = dict(batch)
    moved[ENV_STATE_KEY] = batch[ENV_STATE_KEY].clone()
    moved[ENV_STATE_KEY][..., 4] += 0.05  # blue's x
    with torch.no_grad():
        changed = policy.prefix_embeddings(moved) - policy.prefix_embeddings(batch)
    changed = changed.abs().amax((0, 2))  # per prefix token
    rows, cols = policy.config.grid
    blue = rows * cols + policy.config.max_instruction_tokens + 1  # after the red token
    assert changed.nonzero().flatten().tolist() == [blue]
    before = policy.net.object_proj.weight.detach().clone()
    policy.train()
    opt = torch.optim.AdamW(policy.optimizer_groups(), weight_decay=0.0)
    for _ in range(3):
        loss, _ = policy(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.equal(before, policy.net.object_proj.weight)
