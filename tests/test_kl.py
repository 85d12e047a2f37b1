"""KL estimators and the adaptive KL coefficient."""

import jax.numpy as jnp
import numpy as np
import pytest

from trait_rl.training import kl


def test_estimators_are_zero_when_policy_equals_reference():
    logps = jnp.array([-0.5, -2.0, -7.0])
    np.testing.assert_array_equal(kl.kl_k1(logps, logps), np.zeros(3))
    np.testing.assert_array_equal(kl.kl_k3(logps, logps), np.zeros(3))


def test_k3_is_non_negative_and_k1_can_be_negative():
    logps = jnp.array([-1.0, -1.0])
    ref_logps = jnp.array([-0.5, -1.5])
    assert np.all(np.asarray(kl.kl_k3(logps, ref_logps)) > 0)
    assert float(kl.kl_k1(logps, ref_logps)[0]) == pytest.approx(-0.5)
    # k3 at log q - log p = 0.5: exp(0.5) - 0.5 - 1.
    assert float(kl.kl_k3(logps, ref_logps)[0]) == pytest.approx(np.exp(0.5) - 1.5, rel=1e-6)


def test_adaptive_coefficient_grows_when_kl_above_target():
    controller = kl.init_kl_controller(0.1)
    updated = kl.update_kl_controller(controller, jnp.asarray(1.0), target=0.1, horizon=10)
    # Error clipped at 0.2: 0.1 * (1 + 0.2 / 10).
    assert float(updated.coef) == pytest.approx(0.102)


def test_adaptive_coefficient_shrinks_when_kl_below_target():
    controller = kl.init_kl_controller(0.1)
    updated = kl.update_kl_controller(controller, jnp.asarray(0.09), target=0.1, horizon=10)
    assert float(updated.coef) == pytest.approx(0.1 * (1 - 0.1 / 10))


def test_coefficient_fixed_without_target():
    controller = kl.init_kl_controller(0.04)
    updated = kl.update_kl_controller(controller, jnp.asarray(5.0), target=0.0, horizon=10)
    assert float(updated.coef) == pytest.approx(0.04)


def test_invalid_kl_settings_name_the_field():
    with pytest.raises(ValueError, match="rl.kl_estimator 'k2'"):
        kl.get_kl_estimator("k2")
    with pytest.raises(ValueError, match="rl.kl_mode 'both'"):
        kl.check_kl_mode("both")
    with pytest.raises(ValueError, match="rl.kl_coef -1"):
        kl.init_kl_controller(-1.0)


def test_reward_penalty_only_on_completion_tokens():
    kl_BxN = jnp.array([[0.5, 0.5, 0.5]])
    mask_BxN = jnp.array([[1, 1, 0]])
    penalty = kl.kl_reward_penalty_BxN(kl_BxN, mask_BxN, jnp.asarray(0.1))
    np.testing.assert_allclose(penalty, [[-0.05, -0.05, 0.0]], atol=1e-7)
