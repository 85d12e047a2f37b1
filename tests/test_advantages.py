"""Group-relative advantages and GAE against hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trait_rl.training import advantages
from trait_rl.training.masked import masked_mean, masked_whiten


def test_grpo_equal_rewards_give_exact_zeros():
    rewards_B = jnp.full((8,), 0.7)
    result = advantages.grpo_advantages(rewards_B, group_size=4, std_floor=1e-2)
    assert np.all(np.isfinite(result))
    np.testing.assert_array_equal(result, np.zeros(8))


def test_grpo_near_tie_group_stays_bounded():
    rewards_B = jnp.array([0.35] * 7 + [0.4])
    result = np.asarray(advantages.grpo_advantages(rewards_B, group_size=8, std_floor=1e-2))
    assert np.all(np.isfinite(result))
    # Population std bounds |A| by sqrt(G - 1) = 2.65.
    assert np.max(np.abs(result)) <= np.sqrt(7) + 1e-4
    assert result[-1] > 0
    assert np.all(result[:-1] < 0)


def test_grpo_spread_below_floor_is_only_centred():
    rewards_B = jnp.array([0.35, 0.35, 0.35, 0.351])
    result = advantages.grpo_advantages(rewards_B, group_size=4, std_floor=1e-2)
    np.testing.assert_allclose(result, rewards_B - jnp.mean(rewards_B), atol=1e-7)


def test_grpo_normalises_each_group_separately():
    rewards_B = jnp.array([0.0, 1.0, 10.0, 30.0])
    result = advantages.grpo_advantages(rewards_B, group_size=2, std_floor=1e-2)
    np.testing.assert_allclose(result, [-1.0, 1.0, -1.0, 1.0], atol=1e-6)


def test_rloo_uses_leave_one_out_mean():
    rewards_B = jnp.array([1.0, 2.0, 3.0])
    result = advantages.rloo_advantages(rewards_B, group_size=3, std_floor=0.0)
    np.testing.assert_allclose(result, [1.0 - 2.5, 2.0 - 2.0, 3.0 - 1.5], atol=1e-6)


def test_estimator_registry_rejects_unknown_name():
    assert advantages.get_advantage_estimator("grpo") is advantages.grpo_advantages
    with pytest.raises(ValueError, match="rl.advantage_estimator 'ppo'"):
        advantages.get_advantage_estimator("ppo")


def test_grpo_rejects_batch_not_divisible_by_group():
    with pytest.raises(ValueError, match="rl.group_size=4"):
        advantages.grpo_advantages(jnp.zeros(6), group_size=4, std_floor=1e-2)


def test_gae_matches_hand_computed_three_steps():
    rewards_BxT = jnp.array([[0.0, 0.0, 1.0], [0.0, 1.0, 5.0]])
    values_BxT = jnp.array([[0.5, 0.6, 0.7], [0.5, 0.6, 0.7]])
    mask_BxT = jnp.array([[1, 1, 1], [1, 1, 0]])
    adv_BxT, returns_BxT = jax.jit(advantages.gae, static_argnums=(3, 4))(
        rewards_BxT, values_BxT, mask_BxT, 0.9, 0.8
    )
    # Row 0: deltas 0.04, 0.03, 0.3; A = delta + 0.72 * A_next.
    np.testing.assert_allclose(adv_BxT[0], [0.21712, 0.246, 0.3], atol=1e-6)
    np.testing.assert_allclose(returns_BxT[0], [0.71712, 0.846, 1.0], atol=1e-6)
    # Row 1 ends after two tokens: the reward and value past the mask are ignored.
    np.testing.assert_allclose(adv_BxT[1], [0.328, 0.4, 0.0], atol=1e-6)
    np.testing.assert_allclose(returns_BxT[1], [0.828, 1.0, 0.0], atol=1e-6)


def test_masked_helpers_ignore_masked_entries():
    x = jnp.array([[1.0, 3.0, 100.0]])
    mask = jnp.array([[1, 1, 0]])
    assert float(masked_mean(x, mask)) == pytest.approx(2.0)
    whitened = masked_whiten(x, mask)
    np.testing.assert_allclose(whitened, [[-1.0, 1.0, 0.0]], atol=1e-5)
    assert float(masked_mean(x, jnp.zeros_like(mask))) == 0.0
