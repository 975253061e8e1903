"""Host advantage estimators against hand-computed cases."""

import numpy as np
import pytest

from gasp_jax import rl
from gasp_jax.rl import advantages as A


def test_trr_token_weighted_hand_case():
    # Group (ded, solve): rewards [1, 0] with 1 and 3 tokens -> 4 tokens [1, 0, 0, 0]:
    # mean 0.25, unbiased token variance (0.5625 + 3 * 0.0625) / 3 = 0.25, std 0.5 -> [1.5, -0.5].
    # Group (ind, propose): constant reward -> exactly 0.
    res = A.trr_plus_plus([1.0, 0.0, 0.7, 0.7], [("ded", "solve"), ("ded", "solve"), ("ind", "propose"), ("ind", "propose")],
                          np.array([1, 3, 5, 2]))
    np.testing.assert_allclose(res.advantages, [1.5, -0.5, 0.0, 0.0], rtol=1e-6)
    assert res.advantages.dtype == np.float32
    assert res.advantages[2] == 0.0 and res.advantages[3] == 0.0  # not round-off noise
    assert res.stats["zero_adv_frac"] == 0.5 and res.stats["constant_group_frac"] == 0.5


def test_trr_equals_verl_token_level_whitening():
    """Expand every sequence to its tokens (outcome on every token, gamma = 1), whiten over the group's
    tokens as verl's masked_whiten does, and read one token per sequence back."""
    rng = np.random.default_rng(0)
    n = 40
    rewards = rng.choice([-1.0, -0.5, 0.0, 1.0], n)
    lengths = rng.integers(1, 30, n)
    groups = [("ind", "ded", "abd")[i % 3] + "/" + ("propose", "solve")[i % 2] for i in range(n)]
    res = A.trr_plus_plus(rewards, groups, lengths)
    expected = np.zeros(n)
    for g in set(groups):
        idx = [i for i in range(n) if groups[i] == g]
        tokens = np.concatenate([np.full(lengths[i], rewards[i]) for i in idx])
        mean, var = tokens.mean(), tokens.var(ddof=1)
        for i in idx:
            expected[i] = (rewards[i] - mean) / np.sqrt(var + 1e-8)
    np.testing.assert_allclose(res.advantages, expected, rtol=1e-5, atol=1e-6)
    # Token weighting matters: a plain per-sequence whitening gives different values here.
    assert not np.allclose(res.advantages, A.grpo(rewards, groups).advantages, atol=1e-3)


def test_grpo_rloo_drgrpo_hand_cases():
    groups = [0, 0, 0, 0, 1, 1, 1, 2]
    rewards = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 5.0]
    s = np.sqrt(1.0 / 3.0)  # std (ddof 1) of [1, 0, 0, 1]
    np.testing.assert_allclose(A.grpo(rewards, groups).advantages[:4], np.array([0.5, -0.5, -0.5, 0.5]) / (s + 1e-6), rtol=1e-6)
    # RLOO: r_i - mean of the others; [1, 0, 0] -> [1 - 0, 0 - 0.5, 0 - 0.5].
    np.testing.assert_allclose(A.rloo(rewards, groups).advantages[4:7], [1.0, -0.5, -0.5], rtol=1e-6)
    np.testing.assert_allclose(A.dr_grpo(rewards, groups).advantages[4:7], [2 / 3, -1 / 3, -1 / 3], rtol=1e-6)
    for fn in (A.grpo, A.rloo, A.dr_grpo):  # a singleton group has no baseline: 0
        assert fn(rewards, groups).advantages[7] == 0.0


@pytest.mark.parametrize("fn", [A.grpo, A.rloo, A.dr_grpo])
def test_constant_reward_groups_give_exact_zero(fn):
    res = fn([0.1, 0.1, 0.1, 1.0, 0.0], ["a", "a", "a", "b", "b"])
    assert (res.advantages[:3] == 0.0).all() and (res.advantages[3:] != 0).all()
    assert res.stats["zero_adv_frac"] == pytest.approx(0.6)
    assert res.stats["constant_group_frac"] == pytest.approx(0.5)


def test_bad_rewards_raise():
    with pytest.raises(ValueError, match="non-finite rewards at indices \\[1\\]"):
        A.grpo([0.0, float("nan"), 1.0], [0, 0, 0])
    with pytest.raises(ValueError, match="empty batch"):
        A.trr_plus_plus([], [], np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="group ids"):
        A.rloo([1.0, 0.0], [0])
    with pytest.raises(ValueError, match="lengths"):
        A.trr_plus_plus([1.0, 0.0], [0, 0], np.array([1.5, 2.0]))


def test_compute_advantages_dispatch():
    cfg = rl.default_config().advantage
    out = A.compute_advantages(cfg, [1.0, 0.0], [("t", "r")] * 2, lengths=np.array([2, 2]))
    np.testing.assert_allclose(out.advantages, A.trr_plus_plus([1.0, 0.0], [0, 0], np.array([2, 2])).advantages)
    with pytest.raises(ValueError, match="lengths"):
        A.compute_advantages(cfg, [1.0, 0.0], [0, 0])
    cfg.estimator = "rloo"
    np.testing.assert_allclose(A.compute_advantages(cfg, [1.0, 0.0], [0, 0]).advantages, [1.0, -1.0])
