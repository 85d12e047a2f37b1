"""PPO: clipped value loss, and one jitted update over epochs x minibatches on a tiny model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.test_grpo import CFG, _batch, _loss_config, _optimizer
from trait_rl.model import transformer
from trait_rl.training import ppo
from trait_rl.training.train_state import TrainState


def test_clipped_value_loss_takes_the_larger_error():
    values = jnp.array([[1.0]])
    old_values = jnp.array([[0.0]])
    returns = jnp.array([[2.0]])
    loss, _ = ppo.clipped_value_loss(values, old_values, returns, jnp.ones((1, 1)), 0.2)
    # Unclipped error (1 - 2)^2 = 1; clipped value 0.2 gives (0.2 - 2)^2 = 3.24.
    assert float(loss) == pytest.approx(0.5 * 3.24)


def test_ppo_update_runs_all_minibatches_and_moves_params():
    policy_params = transformer.init_params(jax.random.key(0), CFG)
    params = ppo.init_ppo_params(policy_params, CFG, jax.random.key(2))
    config = ppo.PPOConfig(
        policy=_loss_config("reward"), gamma=1.0, gae_lambda=0.95, vf_coef=0.5,
        value_clip=0.2, epochs=2, minibatches=2,
    )  # fmt: skip
    opt = _optimizer()
    state = TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=opt.init(params),
        rng=jax.random.key_data(jax.random.key(3)),
    )  # fmt: skip
    batch = _batch(policy_params, policy_params, jnp.zeros(6))
    reward_B = jnp.array([1.0, -1.0, 0.5, 0.0, 2.0, -2.0])
    ppo_batch = ppo.make_ppo_batch_fn(CFG, config)(params, batch, reward_B, jnp.asarray(0.1))
    mask = np.asarray(batch.completion_mask_BxN)
    assert np.all(np.asarray(ppo_batch.returns_BxN)[mask == 0] == 0)
    before = np.asarray(params["value_head"]["kernel"]).copy()
    state, metrics = ppo.make_ppo_update(CFG, opt, config)(state, ppo_batch, jnp.asarray(0.1))
    assert int(state.step) == 1
    for name in ("loss", "value_loss", "kl", "ratio_mean", "clip_fraction"):
        assert np.isfinite(float(metrics[name])), name
    assert not np.allclose(np.asarray(state.params["value_head"]["kernel"]), before)
