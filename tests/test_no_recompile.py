"""Jitted steps compile once: a second call with new data of the same shapes reuses the executable.

Each check reads the jit cache size (`_cache_size()`) of the library's own jitted function before
and after the calls, because a growing cache is what a recompilation leaves behind.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from configs import default
from trait_rl.model import sampling, transformer
from trait_rl.model.config import ModelConfig
from trait_rl.parallel import mesh as mesh_lib
from trait_rl.training import grpo, optimizer, rollout, sft, train_state

# A shape no other test uses, so the shared module-level jits gain exactly one entry here.
CFG = ModelConfig(
    vocab_size=40,
    num_layers=1,
    embed_dim=16,
    num_heads=2,
    num_kv_heads=2,
    head_dim=0,
    mlp_dim=24,
    max_len=24,
    tie_embeddings=False,
)
BATCH, PROMPT_LEN, NEW_TOKENS = 4, 5, 3


def _tokens(seed: int, shape: tuple[int, ...]) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).integers(1, CFG.vocab_size, size=shape))


def _train_section() -> ml_collections.ConfigDict:
    train = default.get_config("tiny").sft
    train.steps = 10
    train.warmup_steps = 1
    return train


def test_sft_step_compiles_once():
    mesh = mesh_lib.make_mesh(default.get_config().mesh, jax.devices()[:1])
    tx = optimizer.make_optimizer(_train_section(), "sft")
    shardings = sft.policy_shardings(default.get_config(), CFG, mesh)
    state, state_shardings = train_state.init_train_state(
        lambda key: transformer.init_params(key, CFG), 0, tx, mesh, shardings
    )
    step = sft.make_sft_step(CFG, tx, mesh, state_shardings)
    sizes = []
    for seed in (1, 2, 3):
        tokens = _tokens(seed, (BATCH, 8))
        ones = jnp.ones_like(tokens)
        state, metrics = step(state, sft.SFTBatch(tokens, ones, ones))
        jax.block_until_ready(metrics)
        sizes.append(step._cache_size())
    assert sizes == [1, 1, 1]
    assert int(state.step) == 3


def _sample(params, seed: int) -> sampling.SampleOutput:
    config = sampling.SamplingConfig(max_new_tokens=NEW_TOKENS)
    prompt = _tokens(seed, (BATCH, PROMPT_LEN))
    return sampling.sample(params, CFG, config, prompt, jnp.ones_like(prompt), jax.random.key(seed))


def test_sampler_compiles_once():
    params = transformer.init_params(jax.random.key(0), CFG)
    before = sampling._sample_jit._cache_size()
    first = _sample(params, 1)
    after_first = sampling._sample_jit._cache_size()
    second = _sample(params, 2)
    after_second = sampling._sample_jit._cache_size()
    assert after_first == before + 1
    assert after_second == after_first
    # New prompts and a new key did change the output, so the second call really ran.
    assert not np.array_equal(np.asarray(first.tokens_BxN), np.asarray(second.tokens_BxN))


def _policy_batch(params, seed: int) -> rollout.PolicyBatch:
    prompt = _tokens(seed, (BATCH, PROMPT_LEN))
    prompt_mask = jnp.ones_like(prompt)
    sample = _sample(params, seed)
    ref_logps = rollout.reference_logps_BxN(
        params, CFG, prompt, prompt_mask, sample.tokens_BxN, sample.completion_mask_BxN, 1.0
    )
    advantages = jnp.asarray(np.random.default_rng(seed).normal(size=(BATCH, NEW_TOKENS)))
    return rollout.PolicyBatch(
        prompt_tokens_BxP=prompt,
        prompt_mask_BxP=prompt_mask,
        completion_tokens_BxN=sample.tokens_BxN,
        completion_mask_BxN=sample.completion_mask_BxN,
        old_logps_BxN=sample.logps_BxN,
        ref_logps_BxN=ref_logps,
        advantages_BxN=advantages.astype(jnp.float32),
    )


def test_grpo_step_and_reference_compile_once():
    params = transformer.init_params(jax.random.key(0), CFG)
    rl = default.get_config().rl
    tx = optimizer.make_optimizer(_train_section(), "rl")
    step = grpo.make_grpo_step(CFG, tx, grpo.policy_loss_config_from(rl))
    state = train_state.TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=train_state.raw_key(0),
    )
    reference_sizes, step_sizes = [], []
    for seed in (1, 2, 3):
        batch = _policy_batch(state.params, seed)
        reference_sizes.append(rollout.reference_logps_BxN._cache_size())
        state, metrics = step(state, batch, jnp.asarray(0.04, jnp.float32))
        jax.block_until_ready(metrics)
        step_sizes.append(step._cache_size())
    assert step_sizes == [1, 1, 1]
    assert reference_sizes[1] == reference_sizes[0]
    assert reference_sizes[2] == reference_sizes[0]
    assert int(state.step) == 3
