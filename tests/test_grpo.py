"""GRPO on a tiny random model: importance ratio at the start, KL to the reference, updates."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from trait_rl.model import sampling, transformer
from trait_rl.model.config import ModelConfig
from trait_rl.training import grpo, optimizer, rollout
from trait_rl.training.train_state import TrainState

CFG = ModelConfig(
    vocab_size=32, num_layers=2, embed_dim=32, num_heads=2, num_kv_heads=2, head_dim=0,
    mlp_dim=64, max_len=24,
)  # fmt: skip
STOP_ID = 3
NEW_TOKENS = 6


def _prompts():
    # Three prompts with 0, 2 and 4 left-padding tokens; pad id 0.
    tokens = np.array([[5, 6, 7, 8, 9, 10], [0, 0, 11, 12, 13, 14], [0, 0, 0, 0, 15, 16]])
    return rollout.repeat_prompts(tokens, (tokens != 0).astype(np.int32), group_size=2)


def _rollout(params, rng=0):
    prompt_tokens, prompt_mask = _prompts()
    config = sampling.SamplingConfig(
        max_new_tokens=NEW_TOKENS, temperature=1.0, stop_ids=(STOP_ID,)
    )
    sample = sampling.sample(
        params, CFG, config, jnp.asarray(prompt_tokens), jnp.asarray(prompt_mask),
        jax.random.key(rng),
    )  # fmt: skip
    return prompt_tokens, prompt_mask, sample


def _batch(params, ref_params, advantages_B, rng=0) -> rollout.PolicyBatch:
    prompt_tokens, prompt_mask, sample = _rollout(params, rng)
    ref_logps = rollout.reference_logps_BxN(
        ref_params, CFG, prompt_tokens, prompt_mask, sample.tokens_BxN,
        sample.completion_mask_BxN, 1.0,
    )  # fmt: skip
    mask = sample.completion_mask_BxN
    return rollout.PolicyBatch(
        prompt_tokens_BxP=jnp.asarray(prompt_tokens),
        prompt_mask_BxP=jnp.asarray(prompt_mask),
        completion_tokens_BxN=sample.tokens_BxN,
        completion_mask_BxN=mask,
        old_logps_BxN=sample.logps_BxN * mask,
        ref_logps_BxN=ref_logps,
        advantages_BxN=jnp.broadcast_to(advantages_B[:, None], mask.shape) * mask,
    )


def _loss_config(kl_coef_mode="loss"):
    return grpo.PolicyLossConfig(
        clip_eps=0.2, kl_estimator="k3", kl_mode=kl_coef_mode, temperature=1.0
    )


@pytest.fixture(scope="module")
def params():
    return transformer.init_params(jax.random.key(0), CFG)


def test_ratio_is_one_before_first_update(params):
    prompt_tokens, prompt_mask, sample = _rollout(params)
    logps = rollout.completion_logps_BxN(
        params, CFG, prompt_tokens, prompt_mask, sample.tokens_BxN,
        sample.completion_mask_BxN, 1.0,
    )  # fmt: skip
    mask = np.asarray(sample.completion_mask_BxN)
    assert mask.sum() > len(mask)  # more than one token per completion on average
    ratio = np.exp(np.asarray(logps) - np.asarray(sample.logps_BxN))
    np.testing.assert_allclose(ratio[mask == 1], 1.0, atol=1e-5)


def test_kl_zero_when_policy_equals_reference(params):
    batch = _batch(params, params, jnp.zeros(6))
    loss, metrics = grpo.grpo_loss(params, CFG, batch, jnp.asarray(0.0), _loss_config())
    assert float(metrics["kl"]) == pytest.approx(0.0, abs=1e-6)
    assert float(metrics["ratio_mean"]) == pytest.approx(1.0, abs=1e-5)
    assert np.isfinite(float(loss))


def _optimizer():
    section = ml_collections.ConfigDict(
        dict(steps=10, learning_rate=3e-2, warmup_steps=0, end_learning_rate_fraction=1.0,
             weight_decay=0.0, grad_clip_norm=1.0, b1=0.9, b2=0.98)
    )  # fmt: skip
    return optimizer.make_optimizer(section, "rl")


def test_kl_positive_after_updates_with_zero_coefficient(params):
    opt = _optimizer()
    ref_params = params
    policy_params = jax.tree_util.tree_map(jnp.copy, params)
    state = TrainState(
        step=jnp.zeros((), jnp.int32), params=policy_params,
        opt_state=opt.init(policy_params), rng=jax.random.key_data(jax.random.key(1)),
    )  # fmt: skip
    step = grpo.make_grpo_step(CFG, opt, _loss_config())
    advantages_B = jnp.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    kl_values = []
    for i in range(3):
        batch = _batch(state.params, ref_params, advantages_B, rng=i)
        state, metrics = step(state, batch, jnp.asarray(0.0))
        kl_values.append(float(metrics["kl"]))
    assert "kl" in metrics
    assert kl_values[0] == pytest.approx(0.0, abs=1e-6)
    assert kl_values[-1] > 1e-4
    assert int(state.step) == 3


def test_shared_prompts_give_the_same_logps_and_gradients(params):
    """Running each group's prompt once equals running it in every row, values and gradients.

    The groups hold prompts with 0, 2 and 4 left-padding tokens and completions that stop early,
    so padding on both sides is covered.
    """
    advantages_B = jnp.array([1.0, -0.5, 0.25, -1.0, 0.75, -0.25])
    batch = _batch(params, params, advantages_B, rng=3)
    args = (batch.prompt_tokens_BxP, batch.prompt_mask_BxP, batch.completion_tokens_BxN,
            batch.completion_mask_BxN, 1.0)  # fmt: skip
    per_row = rollout.completion_logps_BxN(params, CFG, *args)
    shared = rollout.completion_logps_BxN(params, CFG, *args, 2)
    assert np.asarray(batch.completion_mask_BxN).min() == 0  # some completions stopped early
    np.testing.assert_allclose(np.asarray(shared), np.asarray(per_row), atol=1e-5)

    def grads(prompt_repeats):
        loss = lambda p: grpo.grpo_loss(p, CFG, batch, jnp.asarray(0.1), _loss_config(),
                                        prompt_repeats)[0]  # fmt: skip
        return jax.grad(loss)(params)

    for a, b in zip(jax.tree.leaves(grads(1)), jax.tree.leaves(grads(2)), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("prompt_repeats", "message"),
    [(4, "does not divide the batch size 6"), (0, "expected a positive integer"),
     (-2, "expected a positive integer"), (2.0, "expected a positive integer")],
)  # fmt: skip
def test_logps_reject_bad_prompt_repeats(params, prompt_repeats, message):
    batch = _batch(params, params, jnp.zeros(6))
    args = (batch.prompt_tokens_BxP, batch.prompt_mask_BxP, batch.completion_tokens_BxN,
            batch.completion_mask_BxN, 1.0, prompt_repeats)  # fmt: skip
    with pytest.raises(ValueError, match=message):
        rollout.completion_logps_BxN(params, CFG, *args)
