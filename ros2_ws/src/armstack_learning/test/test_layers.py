"""armstack_learning.layers.Dropout: nn.Dropout's function, cheaper on the CPU."""

import pytest

torch = pytest.importorskip("torch", reason="training dependencies (requirements-train.txt)")

from armstack_learning.layers import Dropout  # noqa: E402


def test_training_zeroes_a_share_p_and_scales_the_rest_by_one_over_one_minus_p():
    torch.manual_seed(0)
    p, n = 0.25, 400_000
    x = torch.full((n,), 2.0, requires_grad=True)
    y = Dropout(p).train()(x)
    kept = y != 0
    # Binomial(n, 1 - p): four standard deviations.
    assert abs(kept.float().mean().item() - (1 - p)) < 4 * (p * (1 - p) / n) ** 0.5
    assert torch.allclose(y[kept], torch.full_like(y[kept], 2.0 / (1 - p)))
    y.sum().backward()
    # The gradient passes through the kept elements with the same scale, and nowhere else.
    assert torch.equal(x.grad, kept.float() / (1 - p))


def test_each_call_draws_a_new_mask():
    drop = Dropout(0.5).train()
    x = torch.ones(1000)
    assert not torch.equal(drop(x), drop(x))


def test_eval_mode_and_p_zero_pass_the_input_through():
    x = torch.randn(3, 5)
    assert Dropout(0.3).eval()(x) is x
    assert Dropout(0.0).train()(x) is x


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_a_probability_outside_zero_to_one_is_refused(p):
    with pytest.raises(ValueError, match="dropout probability must be in"):
        Dropout(p)


def test_the_transformer_policies_use_it(make_policy, tiny_act_config):
    policy, _ = make_policy("act", tiny_act_config(dropout=0.1))
    assert not any(isinstance(m, torch.nn.Dropout) for m in policy.modules())
    assert any(isinstance(m, Dropout) and m.p == 0.1 for m in policy.modules())
