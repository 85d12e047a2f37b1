"""Sequence rewards of an RL rollout and their placement on the completion tokens.

reward = sum_k w_k * normalised trait score_k
         + task_reward * [correct answer]
         - malformed_penalty * [response does not parse]
         - missing_stop_penalty * [completion hit max_new_tokens without a stop token]

Trait scores come from the learned reward heads (normalised per batch or with running statistics)
or, for the oracle arm, from the programmatic judges. The sequence reward sits on the last
completion token: the stop token, or for a truncated completion the last sampled token.
"""

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

import trait_rl
from trait_rl.data.records import PromptRecord
from trait_rl.rewards import judges

NORMALIZATIONS = ("batch", "running", "none")
NUM_TRAITS = len(trait_rl.TRAITS)


@dataclasses.dataclass(frozen=True)
class RewardConfig:
    """Static reward settings read from `config.rl` and the arm.

    trait_weights: weight of each trait in TRAITS order.
    normalization: batch | running | none, applied to the learned heads only (judge scores are
      already in [0, 1]).
    """

    trait_weights: tuple[float, float, float]
    normalization: str
    task_reward: float
    malformed_penalty: float
    missing_stop_penalty: float

    def __post_init__(self):
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"invalid rl.reward_normalization {self.normalization!r}; "
                f"expected one of {NORMALIZATIONS}"
            )
        if len(self.trait_weights) != NUM_TRAITS:
            raise ValueError(
                f"trait_weights has {len(self.trait_weights)} entries; expected one per trait "
                f"in {trait_rl.TRAITS}"
            )


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RunningMoments:
    """Running mean and population variance of each trait head, carried across RL steps."""

    count: jax.Array  # float32 scalar: sequences seen so far.
    mean_K: jax.Array
    var_K: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class HostJudgements:
    """Judge results for a batch of decoded responses, as arrays.

    trait_scores_Bx3: judge score per trait, 0 where the prompt does not test the trait.
    scored_Bx3: 1 where the judge scored the trait.
    correct_B: 1 for a correct answer on a known fact.
    malformed_B: 1 where the response does not parse.
    """

    trait_scores_Bx3: np.ndarray
    scored_Bx3: np.ndarray
    correct_B: np.ndarray
    malformed_B: np.ndarray


def init_running_moments(num_traits: int = NUM_TRAITS) -> RunningMoments:
    return RunningMoments(
        count=jnp.zeros((), jnp.float32),
        mean_K=jnp.zeros((num_traits,), jnp.float32),
        var_K=jnp.ones((num_traits,), jnp.float32),
    )


def update_running_moments(moments: RunningMoments, scores_BxK: jax.Array) -> RunningMoments:
    """Merge a batch into the running moments (Chan et al. parallel variance update)."""
    batch_count = jnp.asarray(scores_BxK.shape[0], jnp.float32)
    batch_mean_K = jnp.mean(scores_BxK, axis=0)
    batch_var_K = jnp.var(scores_BxK, axis=0)
    total = moments.count + batch_count
    delta_K = batch_mean_K - moments.mean_K
    mean_K = moments.mean_K + delta_K * batch_count / total
    sum_squares_K = (
        moments.var_K * moments.count
        + batch_var_K * batch_count
        + jnp.square(delta_K) * moments.count * batch_count / total
    )
    return RunningMoments(count=total, mean_K=mean_K, var_K=sum_squares_K / total)


def normalize_trait_scores(
    scores_BxK: jax.Array, moments: RunningMoments, normalization: str, eps: float = 1e-6
) -> tuple[jax.Array, RunningMoments]:
    """Scale each trait head to zero mean and unit variance; returns (scores, new moments).

    `batch` uses this batch's statistics; `running` first merges the batch into the running
    moments, so the first step is not divided by the initial placeholder variance; `none` returns
    the raw heads. The heads live on different scales after Bradley-Terry training, so without
    normalisation the trait weights would not mean what they say.
    """
    scores_BxK = scores_BxK.astype(jnp.float32)
    if normalization == "none":
        return scores_BxK, moments
    if normalization == "batch":
        mean_K, var_K = jnp.mean(scores_BxK, axis=0), jnp.var(scores_BxK, axis=0)
    elif normalization == "running":
        moments = update_running_moments(moments, scores_BxK)
        mean_K, var_K = moments.mean_K, moments.var_K
    else:
        raise ValueError(
            f"invalid rl.reward_normalization {normalization!r}; expected one of {NORMALIZATIONS}"
        )
    return (scores_BxK - mean_K) * jax.lax.rsqrt(var_K + eps), moments


def combine_trait_rewards_B(
    scores_Bx3: jax.Array, scored_Bx3: jax.Array, trait_weights: Sequence[float]
) -> jax.Array:
    """Weighted sum over the traits the batch was scored on: sum_k w_k * scored_k * score_k."""
    weights_3 = jnp.asarray(trait_weights, jnp.float32)
    return jnp.sum(scores_Bx3 * scored_Bx3 * weights_3, axis=-1)


def sequence_rewards_B(
    trait_reward_B: jax.Array,
    correct_B: jax.Array,
    malformed_B: jax.Array,
    truncated_B: jax.Array,
    reward_config: RewardConfig,
) -> jax.Array:
    """Add the task reward and subtract the malformed-output and missing-stop penalties."""
    return (
        trait_reward_B
        + reward_config.task_reward * correct_B.astype(jnp.float32)
        - reward_config.malformed_penalty * malformed_B.astype(jnp.float32)
        - reward_config.missing_stop_penalty * truncated_B.astype(jnp.float32)
    )


def place_on_last_token_BxN(reward_B: jax.Array, completion_mask_BxN: jax.Array) -> jax.Array:
    """Put each sequence reward on its last completion token, zeros elsewhere.

    The last token is the stop token, or for a truncated completion the last sampled token. A
    completion with an empty mask gets no reward anywhere.
    """
    mask_BxN = completion_mask_BxN.astype(jnp.int32)
    length_B = jnp.sum(mask_BxN, axis=-1)
    positions_N = jnp.arange(mask_BxN.shape[-1])
    is_last_BxN = (positions_N[None, :] == (length_B - 1)[:, None]) & (length_B[:, None] > 0)
    return jnp.where(is_last_BxN, reward_B[:, None].astype(jnp.float32), 0.0)


def judge_responses(records: Sequence[PromptRecord], responses: Sequence[str]) -> HostJudgements:
    """Score decoded responses with the programmatic judges, on the host.

    Every arm needs the judges for the task reward and the malformed penalty; the oracle arm also
    takes its trait scores from them.
    """
    if len(records) != len(responses):
        raise ValueError(
            f"judge_responses got {len(records)} records and {len(responses)} responses; "
            "pass one response per record"
        )
    batch = len(records)
    scores = np.zeros((batch, NUM_TRAITS), np.float32)
    scored = np.zeros((batch, NUM_TRAITS), np.float32)
    correct = np.zeros((batch,), np.float32)
    malformed = np.zeros((batch,), np.float32)
    for row, (record, response) in enumerate(zip(records, responses, strict=True)):
        judgement = judges.judge(record, response)
        for trait, score in judgement.scores.items():
            column = trait_rl.TRAITS.index(trait)
            scores[row, column] = score
            scored[row, column] = 1.0
        correct[row] = float(bool(judgement.correct))
        malformed[row] = float(judgement.malformed)
    return HostJudgements(scores, scored, correct, malformed)
