"""Build the jitted steps the benchmarks time, from random weights and random tokens.

Each builder returns plain callables over device arrays, so a benchmark times exactly the
library's jitted functions and nothing of the data pipeline.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import benchlib  # noqa: F401  (puts the repository root on sys.path)
import jax
import jax.numpy as jnp
import numpy as np

from configs import default
from trait_rl.model import sampling, transformer
from trait_rl.model.config import ModelConfig
from trait_rl.parallel import mesh as mesh_lib
from trait_rl.training import (
    advantages,
    grpo,
    optimizer,
    ppo,
    rl_loop,
    rollout,
    sft,
    train_state,
)


def single_device_mesh():
    """Return a mesh over the first device only, so CPU runs do not split into virtual devices."""
    return mesh_lib.make_mesh(default.get_config().mesh, jax.devices()[:1])


def random_tokens(rng: np.random.Generator, shape: tuple[int, ...], vocab: int) -> np.ndarray:
    """Draw token ids in [1, vocab), never the pad id 0."""
    return rng.integers(1, vocab, size=shape, dtype=np.int32)


# ----------------------------------------------------------------------------- SFT


def make_sft(cfg: ModelConfig, batch: int, seq_len: int, seed: int = 0):
    """Return (step, state, batches): the jitted SFT step, its state and a batch maker."""
    mesh = single_device_mesh()
    config = default.get_config()
    train = config.sft
    tx = optimizer.make_optimizer(train, "sft")
    param_shardings = sft.policy_shardings(config, cfg, mesh)
    state, shardings = train_state.init_train_state(
        lambda key: transformer.init_params(key, cfg), seed, tx, mesh, param_shardings
    )
    step = sft.make_sft_step(cfg, tx, mesh, shardings)
    rng = np.random.default_rng(seed)

    def make_batch(_: int) -> sft.SFTBatch:
        tokens = random_tokens(rng, (batch, seq_len), cfg.vocab_size)
        ones = np.ones_like(tokens)
        return sft.SFTBatch(tokens=jnp.asarray(tokens), input_mask=ones, loss_mask=ones)

    return step, state, make_batch


# ----------------------------------------------------------------------------- RL


@dataclasses.dataclass(frozen=True)
class RLShape:
    """The shape of one RL step: B = prompts * group_size completions of `new_tokens`."""

    prompts: int = 8
    group_size: int = 8
    prompt_len: int = 32
    new_tokens: int = 32
    kl_coef: float = 0.04

    @property
    def batch(self) -> int:
        return self.prompts * self.group_size


def rl_config(shape: RLShape, algorithm: str):
    """Return `config.rl` of the default config with the benchmark's shape and KL coefficient."""
    rl = default.get_config().rl
    rl.algorithm = algorithm
    rl.prompts_per_step = shape.prompts
    rl.group_size = shape.group_size
    rl.max_new_tokens = shape.new_tokens
    rl.kl_coef = shape.kl_coef
    return rl


def sampling_config(shape: RLShape) -> sampling.SamplingConfig:
    """Temperature 1, no top-k/top-p, no stop ids: every completion is exactly new_tokens long."""
    return sampling.SamplingConfig(max_new_tokens=shape.new_tokens, temperature=1.0)


def prompt_batch(shape: RLShape, vocab: int, rng: np.random.Generator):
    """Return the prompts (no padding) repeated group_size times, as device arrays."""
    tokens = random_tokens(rng, (shape.prompts, shape.prompt_len), vocab)
    mask = np.ones_like(tokens)
    tokens, mask = rollout.repeat_prompts(tokens, mask, shape.group_size)
    return jnp.asarray(tokens), jnp.asarray(mask)


def synthetic_reward_B(tokens_BxN: jax.Array) -> jax.Array:
    """A cheap on-device reward (share of even tokens), so the timing holds no judge."""
    return jnp.mean((tokens_BxN % 2 == 0).astype(jnp.float32), axis=1)


def make_rollout_parts(
    cfg: ModelConfig, shape: RLShape, seed: int = 0, rollout_matmul_dtype: str = ""
):
    """Return (policy params, sample fn, reference fn); the reference is a frozen copy.

    The sampler multiplies in `rollout_matmul_dtype` ("" = the model's), as
    `rl.rollout_matmul_dtype` makes the RL loop do.
    """
    params = transformer.init_params(jax.random.key(seed), cfg)
    ref_params = jax.tree_util.tree_map(jnp.copy, params)
    sampling_cfg = sampling_config(shape)
    rollout_cfg = rollout.rollout_model_config(cfg, rollout_matmul_dtype)

    def sample(policy_params, prompt_tokens, prompt_mask, key):
        return sampling.sample(
            policy_params,
            rollout_cfg,
            sampling_cfg,
            prompt_tokens,
            prompt_mask,
            key,
            prompt_repeats=shape.group_size,
        )

    def reference(prompt_tokens, prompt_mask, output):
        return rollout.reference_logps_BxN(
            ref_params,
            cfg,
            prompt_tokens,
            prompt_mask,
            output.tokens_BxN,
            output.completion_mask_BxN,
            sampling_cfg.logps_temperature,
            shape.group_size,
        )

    return params, sample, reference


def policy_batch(prompt_tokens, prompt_mask, output, ref_logps_BxN) -> rollout.PolicyBatch:
    """Assemble the rollout batch the way the RL loop does, advantages still zero."""
    mask_BxN = output.completion_mask_BxN
    return rollout.PolicyBatch(
        prompt_tokens_BxP=prompt_tokens,
        prompt_mask_BxP=prompt_mask,
        completion_tokens_BxN=output.tokens_BxN,
        completion_mask_BxN=mask_BxN,
        old_logps_BxN=output.logps_BxN * mask_BxN,
        ref_logps_BxN=ref_logps_BxN,
        advantages_BxN=jnp.zeros(mask_BxN.shape, jnp.float32),
    )


def make_grpo_update(cfg: ModelConfig, shape: RLShape, params) -> tuple[Callable, Any, Any]:
    """Return (update(state, batch) -> (state, metrics), initial state, jitted GRPO step).

    The update computes the group advantages from the synthetic reward, then runs the library's
    jitted GRPO step.
    """
    rl = rl_config(shape, "grpo")
    tx = optimizer.make_optimizer(rl_loop.optimizer_section(rl, 1), "rl")
    step_fn = grpo.make_grpo_step(
        cfg, tx, grpo.policy_loss_config_from(rl), prompt_repeats=shape.group_size
    )
    estimator = advantages.get_advantage_estimator(rl.advantage_estimator)
    kl_coef = jnp.asarray(rl.kl_coef, jnp.float32)
    state = train_state.TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=train_state.raw_key(0),
    )

    def update(state, batch: rollout.PolicyBatch):
        reward_B = synthetic_reward_B(batch.completion_tokens_BxN)
        advantages_B = estimator(reward_B, shape.group_size, rl.std_floor)
        batch = dataclasses.replace(
            batch, advantages_BxN=advantages_B[:, None] * batch.completion_mask_BxN
        )
        return step_fn(state, batch, kl_coef)

    return update, state, step_fn


def make_ppo_update(cfg: ModelConfig, shape: RLShape, params):
    """Return (values_and_gae(state, batch), update(state, ppo_batch), state, PPOConfig).

    PPO runs `rl.ppo_epochs` x `rl.ppo_minibatches` optimizer updates per rollout (the default
    config's 2 x 2), plus one extra policy forward for the values.
    """
    rl = rl_config(shape, "ppo")
    config = ppo.ppo_config_from(rl)
    tx = optimizer.make_optimizer(
        rl_loop.optimizer_section(rl, config.epochs * config.minibatches), "rl"
    )
    ppo_params = ppo.init_ppo_params(params, cfg, jax.random.key(1))
    batch_fn = ppo.make_ppo_batch_fn(cfg, config)
    update_fn = ppo.make_ppo_update(cfg, tx, config)
    kl_coef = jnp.asarray(rl.kl_coef, jnp.float32)
    state = train_state.TrainState(
        step=jnp.zeros((), jnp.int32),
        params=ppo_params,
        opt_state=tx.init(ppo_params),
        rng=train_state.raw_key(0),
    )

    def values_and_gae(state, batch: rollout.PolicyBatch):
        reward_B = synthetic_reward_B(batch.completion_tokens_BxN)
        return batch_fn(state.params, batch, reward_B, kl_coef)

    def update(state, ppo_batch):
        return update_fn(state, ppo_batch, kl_coef)

    return values_and_gae, update, state, config
