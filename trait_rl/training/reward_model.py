"""Multi-trait reward model: the SFT backbone plus one scalar head per trait, Bradley-Terry loss.

Reward params are `{"backbone": transformer params, "head": {"kernel": D x 3, "bias": 3}}`, with
head outputs in `trait_rl.TRAITS` order. The score of a sequence is the head output at its last
real token (the eos of a complete response), read with `gather_last` over the input mask, so
right padding never changes it.
"""

import dataclasses
import os
from collections.abc import Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from trait_rl import TRAITS
from trait_rl.data import batching
from trait_rl.data.records import PreferencePair
from trait_rl.model import heads, transformer
from trait_rl.model.config import ModelConfig
from trait_rl.parallel import sharding
from trait_rl.training import loop, optimizer, train_state
from trait_rl.training.train_state import TrainState

ALL_TRAITS = -1  # `trait` value of a pair that applies to every head.


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PreferenceBatch:
    """Right-padded chosen and rejected sequences of the same prompts.

    Token and mask fields are int32 B x T. `trait` is int32 B: the index in TRAITS of the head
    that the pair trains, or ALL_TRAITS for every head. `weight` is float32 B, and 0 marks the
    filler rows that complete the last evaluation batch.
    """

    chosen_tokens: jax.Array
    chosen_mask: jax.Array
    rejected_tokens: jax.Array
    rejected_mask: jax.Array
    trait: jax.Array
    weight: jax.Array

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "PreferenceBatch":
        """Build a batch from `batching.tokenize_pairs` arrays (weight 1 unless given)."""
        weight = arrays.get("weight")
        if weight is None:
            weight = np.ones(len(arrays["trait"]), np.float32)
        return cls(
            chosen_tokens=arrays["chosen_tokens"],
            chosen_mask=arrays["chosen_input_mask"],
            rejected_tokens=arrays["rejected_tokens"],
            rejected_mask=arrays["rejected_input_mask"],
            trait=arrays["trait"],
            weight=weight,
        )


def init_reward_params(rng: jax.Array, model_cfg: ModelConfig, backbone_params) -> dict:
    """Return reward params with the given backbone and a fresh 3-output head."""
    return {
        "backbone": backbone_params,
        "head": heads.init_scalar_head(rng, model_cfg, len(TRAITS)),
    }


def reward_logical_axes(model_cfg: ModelConfig) -> dict:
    return {
        "backbone": transformer.param_logical_axes(model_cfg),
        "head": heads.scalar_head_logical_axes(),
    }


def reward_scores(reward_params, model_cfg: ModelConfig, tokens_BxT, mask_BxT) -> jax.Array:
    """Return B x 3 float32 trait scores read at the last position where `mask_BxT` is 1."""
    hidden_BxTxD, _ = transformer.backbone(
        reward_params["backbone"], model_cfg, tokens_BxT, mask_BxT
    )
    values_BxTx3 = heads.scalar_head(reward_params["head"], hidden_BxTxD)
    return heads.gather_last(values_BxTx3, mask_BxT)


def pair_weights(trait_B: jax.Array, weight_B: jax.Array) -> jax.Array:
    """Return B x 3 weights: each pair counts only for its trait's head (all heads for -1)."""
    heads_3 = jnp.arange(len(TRAITS))
    selected_Bx3 = (trait_B[:, None] == heads_3[None, :]) | (trait_B[:, None] == ALL_TRAITS)
    return selected_Bx3.astype(jnp.float32) * weight_B[:, None].astype(jnp.float32)


def bradley_terry_loss(
    chosen_Bx3: jax.Array, rejected_Bx3: jax.Array, trait_B: jax.Array, weight_B: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Return the Bradley-Terry loss -log sigmoid(r_chosen - r_rejected) and metrics.

    Bradley & Terry (1952); as a reward-model loss in Ouyang et al. (2022), "Training language
    models to follow instructions with human feedback". Each head is trained only on the pairs
    of its trait, and the mean runs over all (pair, head) terms of the batch.
    """
    weights_Bx3 = pair_weights(trait_B, weight_B)
    margin_Bx3 = chosen_Bx3 - rejected_Bx3
    total = jnp.maximum(jnp.sum(weights_Bx3), 1.0)
    loss = jnp.sum(-jax.nn.log_sigmoid(margin_Bx3) * weights_Bx3) / total
    accuracy = jnp.sum((margin_Bx3 > 0) * weights_Bx3) / total
    margin = jnp.sum(margin_Bx3 * weights_Bx3) / total
    return loss, {"loss": loss, "accuracy": accuracy, "margin": margin}


def _pair_scores(reward_params, model_cfg: ModelConfig, batch: PreferenceBatch):
    # One forward over chosen and rejected together, so both halves see the same parameters
    # in one pass (and one compiled program).
    tokens_2BxT = jnp.concatenate([batch.chosen_tokens, batch.rejected_tokens])
    mask_2BxT = jnp.concatenate([batch.chosen_mask, batch.rejected_mask])
    scores_2Bx3 = reward_scores(reward_params, model_cfg, tokens_2BxT, mask_2BxT)
    return jnp.split(scores_2Bx3, 2)


def reward_loss(
    reward_params, model_cfg: ModelConfig, batch: PreferenceBatch
) -> tuple[jax.Array, dict[str, jax.Array]]:
    chosen_Bx3, rejected_Bx3 = _pair_scores(reward_params, model_cfg, batch)
    return bradley_terry_loss(chosen_Bx3, rejected_Bx3, batch.trait, batch.weight)


def batch_shardings(mesh) -> PreferenceBatch:
    batch_2d = sharding.batch_sharding(mesh, 2)
    batch_1d = sharding.batch_sharding(mesh, 1)
    return PreferenceBatch(batch_2d, batch_2d, batch_2d, batch_2d, batch_1d, batch_1d)


def make_reward_step(
    model_cfg: ModelConfig,
    tx: optax.GradientTransformation,
    mesh,
    state_shardings: TrainState,
    schedule: optax.Schedule | None = None,
):
    """Return `step(state, batch) -> (state, metrics)`, jitted once with donation of `state`."""
    return train_state.make_train_step(
        lambda params, batch: reward_loss(params, model_cfg, batch),
        tx,
        state_shardings,
        batch_shardings(mesh),
        schedule,
    )


def evaluation_batches(arrays: Mapping[str, np.ndarray], batch_size: int) -> Iterator[dict]:
    """Yield every pair once in order; the last batch is filled with weight-0 copies of row 0."""
    num_pairs = len(arrays["trait"])
    for start in range(0, num_pairs, batch_size):
        rows = np.arange(start, start + batch_size)
        valid = rows < num_pairs
        batch = {name: array[np.where(valid, rows, 0)] for name, array in arrays.items()}
        batch["weight"] = valid.astype(np.float32)
        yield batch


def pairwise_accuracy(
    reward_params, model_cfg: ModelConfig, arrays: Mapping[str, np.ndarray], batch_size: int, mesh
) -> dict[str, float]:
    """Return, per trait, the fraction of its pairs whose chosen response scores higher.

    Only the trait's own head is compared. A trait without pairs gets NaN.
    """
    score_fn = jax.jit(_pair_scores, static_argnums=1)
    correct_3 = np.zeros(len(TRAITS))
    counted_3 = np.zeros(len(TRAITS))
    for host_batch in evaluation_batches(arrays, batch_size):
        batch = sharding.shard_batch(PreferenceBatch.from_arrays(host_batch), mesh)
        chosen_Bx3, rejected_Bx3 = jax.device_get(score_fn(reward_params, model_cfg, batch))
        weights_Bx3 = np.asarray(
            pair_weights(jnp.asarray(host_batch["trait"]), host_batch["weight"])
        )
        correct_3 += np.sum((chosen_Bx3 > rejected_Bx3) * weights_Bx3, axis=0)
        counted_3 += np.sum(weights_Bx3, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy_3 = np.where(counted_3 > 0, correct_3 / counted_3, np.nan)
    return {trait: float(accuracy_3[k]) for k, trait in enumerate(TRAITS)}


def preference_batches(
    arrays: Mapping[str, np.ndarray], batch_size: int, seed: int, start_step: int, mesh
) -> Iterator[PreferenceBatch]:
    """Yield device PreferenceBatches from `start_step` on (see loop.device_batches)."""
    return loop.device_batches(
        arrays, batch_size, seed, start_step, mesh, PreferenceBatch.from_arrays
    )


def tokenize_preferences(
    tokenizer, pairs: Sequence[PreferencePair], seq_len: int, split: str, writer=None
) -> dict[str, np.ndarray]:
    """Tokenize pairs, dropping those identical after truncation, and log how many were dropped.

    The count goes to `reward/dropped_identical_pairs` (train) or
    `reward/dropped_identical_pairs/<split>` (other splits) at step 0.
    """
    arrays, dropped = batching.tokenize_pairs(tokenizer, pairs, seq_len)
    name = "reward/dropped_identical_pairs"
    if split != "train":
        name = f"{name}/{split}"
    if writer is not None:
        writer.write_scalars(0, {name: dropped})
    return arrays


def train_reward_model(
    config: ml_collections.ConfigDict,
    train_config: ml_collections.ConfigDict,
    model_cfg: ModelConfig,
    sft_params,
    train_pairs: Sequence[PreferencePair],
    validation_pairs: Sequence[PreferencePair],
    tokenizer,
    workdir_phase: str | os.PathLike | None,
    mesh,
    writer=None,
) -> tuple[dict, dict[str, float]]:
    """Train the reward heads and backbone from the SFT params; return (reward params, accuracy).

    Accuracy is per trait on `validation_pairs`, logged as `reward/accuracy/<trait>`.
    """
    train_arrays = tokenize_preferences(
        tokenizer, train_pairs, train_config.seq_len, "train", writer
    )
    validation_arrays = tokenize_preferences(
        tokenizer, validation_pairs, train_config.seq_len, "validation", writer
    )
    tx = optimizer.make_optimizer(train_config, "reward")
    param_shardings = sharding.param_shardings(
        mesh, reward_logical_axes(model_cfg), config.mesh.rules
    )
    head_key = jax.random.fold_in(jax.random.key(config.seed), 1)
    reward_params = init_reward_params(head_key, model_cfg, sft_params)
    state, shardings = train_state.train_state_from_params(
        reward_params, config.seed, tx, mesh, param_shardings
    )
    step_fn = make_reward_step(
        model_cfg.with_activation_dtype(train_config.get("dtype", "")),
        tx,
        mesh,
        shardings,
        optimizer.make_schedule(train_config),
    )
    state = loop.fit(
        state,
        step_fn,
        lambda start: preference_batches(
            train_arrays, train_config.batch_size, config.seed, start, mesh
        ),
        train_config=train_config,
        prefix="reward",
        directory=workdir_phase,
        writer=writer,
        hparams={"model": config.model.to_dict(), "reward": train_config.to_dict()},
    )
    accuracy = pairwise_accuracy(
        state.params, model_cfg, validation_arrays, train_config.batch_size, mesh
    )
    if writer is not None:
        scalars = {f"reward/accuracy/{trait}": value for trait, value in accuracy.items()}
        writer.write_scalars(int(state.step), scalars)
    return state.params, accuracy
