"""RL phase: rollouts, rewards, advantages and GRPO or PPO updates, with checkpoints and metrics.

One step picks prompts (an `rl.trait_mix` share of trait prompts, the rest plain QA) and repeats
each `rl.group_size` times. It samples with the jitted sampler and scores the completions under
the frozen reference. The host then judges the decoded text and builds the rewards, and one
jitted update follows.
"""

import contextlib
import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import trait_rl
from trait_rl.data import batching
from trait_rl.data.records import PromptRecord
from trait_rl.model import sampling
from trait_rl.model.config import ModelConfig
from trait_rl.training import advantages as advantages_lib
from trait_rl.training import (
    arms,
    checkpoints,
    grpo,
    kl,
    lagrangian,
    ppo,
    preemption,
    reward_model,
    rl_rewards,
    rollout,
)
from trait_rl.training.masked import masked_mean
from trait_rl.training.optimizer import make_optimizer
from trait_rl.training.train_state import TrainState

PROMPT_LEN_MULTIPLE = 8  # Prompt length is rounded up to this, so one shape serves the run.


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RLCarry:
    """State carried across RL steps besides the train state; saved in the checkpoint."""

    kl_controller: kl.KLController
    moments: rl_rewards.RunningMoments
    lagrange: lagrangian.LagrangeState


def optimizer_section(rl_config, updates_per_step: int) -> ml_collections.ConfigDict:
    """Express `config.rl` as the train section that `make_optimizer` reads."""
    steps = rl_config.steps * updates_per_step
    return ml_collections.ConfigDict(
        {
            "steps": steps,
            "learning_rate": rl_config.learning_rate,
            "warmup_steps": min(rl_config.warmup_steps * updates_per_step, steps),
            "end_learning_rate_fraction": rl_config.end_learning_rate_fraction,
            "weight_decay": rl_config.weight_decay,
            "grad_clip_norm": rl_config.grad_clip_norm,
            "b1": rl_config.b1,
            "b2": rl_config.b2,
        }
    )


def split_prompts(prompts: list[PromptRecord]) -> tuple[list[PromptRecord], list[PromptRecord]]:
    """Split into (trait prompts, plain QA prompts); QA prompts have trait `task`."""
    trait_prompts = [p for p in prompts if p.trait != "task"]
    task_prompts = [p for p in prompts if p.trait == "task"]
    return trait_prompts, task_prompts


def select_prompts(
    trait_prompts: list[PromptRecord],
    task_prompts: list[PromptRecord],
    count: int,
    trait_mix: float,
    rng: np.random.Generator,
) -> list[PromptRecord]:
    """Draw `count` prompts: round(trait_mix * count) trait prompts when both kinds exist."""
    if not trait_prompts and not task_prompts:
        raise ValueError("train_rl got no prompts; pass the RL prompt records of the world")
    num_trait = round(trait_mix * count) if trait_prompts else 0
    if not task_prompts:
        num_trait = count
    chosen = [trait_prompts[i] for i in rng.integers(0, len(trait_prompts), num_trait)]
    chosen += [task_prompts[i] for i in rng.integers(0, len(task_prompts), count - num_trait)]
    return chosen


def prompt_length(tokenizer, prompts: list[PromptRecord], max_prompt_len: int) -> int:
    """Longest tokenized prompt (with bos), rounded up to PROMPT_LEN_MULTIPLE, capped."""
    longest = max(len(tokenizer.encode(p.prompt)) + 1 for p in prompts)
    rounded = -(-longest // PROMPT_LEN_MULTIPLE) * PROMPT_LEN_MULTIPLE
    return min(rounded, max_prompt_len)


def _model_trait_scores_fn(model_cfg: ModelConfig):
    def scores(reward_params, prompt_tokens, prompt_mask, completion_tokens, completion_mask):
        tokens = jnp.concatenate([prompt_tokens, completion_tokens], axis=1)
        mask = jnp.concatenate([prompt_mask, completion_mask.astype(prompt_mask.dtype)], axis=1)
        return reward_model.reward_scores(reward_params, model_cfg, tokens, mask)

    return jax.jit(scores)


@dataclasses.dataclass(frozen=True)
class _RunSetup:
    arm: arms.Arm
    reward_config: rl_rewards.RewardConfig
    loss_config: grpo.PolicyLossConfig
    ppo_config: ppo.PPOConfig | None
    constraint: lagrangian.TraitConstraint | None
    sampling_config: sampling.SamplingConfig


def _setup(config, tokenizer) -> _RunSetup:
    rl = config.rl
    arm = arms.parse_arm(config.arm, rl)
    if not arm.runs_rl:
        raise ValueError(
            f"arm {config.arm!r} trains no RL policy (rule SFT plus output filter); "
            "run the conventional phase instead, or set arm to trait_rl, single_trait:<trait> "
            "or oracle_reward"
        )
    if rl.algorithm not in ("grpo", "ppo"):
        raise ValueError(f"invalid rl.algorithm {rl.algorithm!r}; expected 'grpo' or 'ppo'")
    advantages_lib.get_advantage_estimator(rl.advantage_estimator)
    reward_config = rl_rewards.RewardConfig(
        trait_weights=arm.trait_weights,
        normalization=rl.reward_normalization,
        task_reward=rl.task_reward,
        malformed_penalty=rl.malformed_penalty,
        missing_stop_penalty=rl.missing_stop_penalty,
    )
    sampling_config = sampling.SamplingConfig(
        banned_ids=(sampling.PAD_ID, tokenizer.bos_id),
        max_new_tokens=rl.max_new_tokens,
        temperature=rl.temperature,
        top_k=rl.top_k,
        top_p=rl.top_p,
        stop_ids=(tokenizer.eos_id,),
    )
    return _RunSetup(
        arm=arm,
        reward_config=reward_config,
        loss_config=grpo.policy_loss_config_from(rl),
        ppo_config=ppo.ppo_config_from(rl) if rl.algorithm == "ppo" else None,
        constraint=lagrangian.constraint_from_config(rl),
        sampling_config=sampling_config,
    )


def _trait_scores(setup, judged, model_scores_fn, reward_params, batch, carry: RLCarry):
    """Return (scores_Bx3 entering the reward, scored_Bx3, raw_Bx3 before normalisation, carry)."""
    if setup.arm.reward_source == "oracle":
        scores_Bx3 = jnp.asarray(judged.trait_scores_Bx3)
        return scores_Bx3, jnp.asarray(judged.scored_Bx3), scores_Bx3, carry
    raw_Bx3 = model_scores_fn(
        reward_params,
        batch.prompt_tokens_BxP,
        batch.prompt_mask_BxP,
        batch.completion_tokens_BxN,
        batch.completion_mask_BxN,
    )
    scores_Bx3, moments = rl_rewards.normalize_trait_scores(
        raw_Bx3, carry.moments, setup.reward_config.normalization
    )
    carry = dataclasses.replace(carry, moments=moments)
    return scores_Bx3, jnp.ones_like(scores_Bx3), raw_Bx3, carry


def _reward_metrics(raw_Bx3, scored_Bx3, judged, sample, reward_B) -> dict[str, float]:
    """Return the step's reward metrics.

    `rl/reward/<trait>` is the trait score before normalisation (a batch-normalised score has
    mean 0 by construction), and `rl/judge/<trait>` the programmatic judge's score of the same
    responses, so reward-model over-optimisation shows as the two drifting apart.
    """
    metrics = {"rl/reward": float(jnp.mean(reward_B))}
    for column, trait in enumerate(trait_rl.TRAITS):
        metrics[f"rl/reward/{trait}"] = float(
            masked_mean(raw_Bx3[:, column], scored_Bx3[:, column])
        )
        judged_column = judged.scored_Bx3[:, column]
        if judged_column.any():
            metrics[f"rl/judge/{trait}"] = float(
                np.sum(judged.trait_scores_Bx3[:, column] * judged_column) / judged_column.sum()
            )
    metrics["rl/task_accuracy"] = float(np.mean(judged.correct_B))
    metrics["rl/malformed_rate"] = float(np.mean(judged.malformed_B))
    metrics["rl/truncated_rate"] = float(jnp.mean(sample.truncated_B.astype(jnp.float32)))
    metrics["rl/completion_length"] = float(jnp.mean(jnp.sum(sample.completion_mask_BxN, 1)))
    return metrics


def _check_finite(step: int, metrics: dict[str, float]) -> None:
    bad = {name: value for name, value in metrics.items() if not np.isfinite(value)}
    if bad:
        raise FloatingPointError(
            f"rl: non-finite metrics {bad} at step {step}; the run stopped. Lower "
            "rl.learning_rate or check the reward model"
        )


def _initial_state(config, params, optimizer) -> TrainState:
    # The update donates the state, and the caller's params may share buffers with the frozen
    # reference, so the state gets its own copy.
    params = jax.tree_util.tree_map(jnp.copy, params)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        rng=jax.random.key_data(jax.random.key(config.seed)),
    )


def _checkpoint_state(state: TrainState, carry: RLCarry) -> TrainState:
    # The carry goes into the optimizer-state item, so one Orbax save stores the whole RL state.
    return dataclasses.replace(state, opt_state={"optimizer": state.opt_state, "rl": carry})


def _restore_target(checkpoint_state: TrainState, mesh) -> TrainState:
    """Return the restore target: single-device leaves become replicated over `mesh`.

    A fresh state's step, RNG and carry are uncommitted single-device arrays, which jit may move
    next to the sharded params. Restored arrays are committed to their target sharding, so
    leaving those on one device would make the update reject the mix of device sets.
    """
    replicated = (
        None if mesh is None else jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    )

    def target(leaf):
        sharding = leaf.sharding
        if replicated is not None and isinstance(sharding, jax.sharding.SingleDeviceSharding):
            sharding = replicated
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)

    return jax.tree.map(target, checkpoint_state)


def train_rl(
    config,
    model_cfg: ModelConfig,
    policy_params,
    ref_params,
    reward_params,
    tokenizer,
    prompts: list[PromptRecord],
    workdir_phase,
    mesh,
    writer,
):
    """Train the policy with GRPO or PPO on `prompts`; returns the final policy parameters.

    `workdir_phase` is WORKDIR/rl_<arm>: an interrupted run resumes from its latest checkpoint.
    NOTE: the RL steps declare no explicit shardings yet, so jit places arrays by the shardings
    of its inputs; `mesh` only gives the restored scalars and RNG a replicated sharding.
    """
    rl = config.rl
    setup = _setup(config, tokenizer)
    is_ppo = setup.ppo_config is not None
    updates_per_step = rl.ppo_epochs * rl.ppo_minibatches if is_ppo else 1
    optimizer = make_optimizer(optimizer_section(rl, updates_per_step), "rl")
    params = policy_params
    if is_ppo:
        params = ppo.init_ppo_params(policy_params, model_cfg, jax.random.key(config.seed + 1))
    state = _initial_state(config, params, optimizer)
    carry = RLCarry(
        kl.init_kl_controller(rl.kl_coef),
        rl_rewards.init_running_moments(),
        lagrangian.init_lagrange_state(),
    )
    manager = checkpoints.open_manager(workdir_phase, rl)
    restored = checkpoints.restore_latest(
        manager, _restore_target(_checkpoint_state(state, carry), mesh)
    )
    if restored is not None:
        carry = restored.opt_state["rl"]
        state = dataclasses.replace(restored, opt_state=restored.opt_state["optimizer"])

    if is_ppo:
        batch_fn = ppo.make_ppo_batch_fn(model_cfg, setup.ppo_config)
        update_fn = ppo.make_ppo_update(model_cfg, optimizer, setup.ppo_config)
    else:
        update_fn = grpo.make_grpo_step(
            model_cfg, optimizer, setup.loss_config, prompt_repeats=rl.group_size
        )
    model_scores_fn = _model_trait_scores_fn(model_cfg)
    rollout_cfg = rollout.rollout_model_config(model_cfg, rl.rollout_matmul_dtype)
    trait_prompts, task_prompts = split_prompts(prompts)
    prompt_len = prompt_length(tokenizer, prompts, model_cfg.max_len - rl.max_new_tokens)
    writer.write_hparams({"rl": rl.to_dict(), "arm": config.arm, "seed": config.seed})

    with preemption.watch_sigterm(), contextlib.closing(manager):
        for step in range(int(state.step), rl.steps):
            records = select_prompts(
                trait_prompts,
                task_prompts,
                rl.prompts_per_step,
                rl.trait_mix,
                np.random.default_rng([config.seed, step]),
            )
            records = [record for record in records for _ in range(rl.group_size)]
            prompt_tokens, prompt_mask = batching.prompt_batch(
                tokenizer, [r.prompt for r in records], prompt_len
            )
            policy_params_now = state.params["policy"] if is_ppo else state.params
            sample_key = jax.random.fold_in(jax.random.key(config.seed), step)
            sample = sampling.sample(
                policy_params_now,
                rollout_cfg,
                setup.sampling_config,
                jnp.asarray(prompt_tokens),
                jnp.asarray(prompt_mask),
                sample_key,
                prompt_repeats=rl.group_size,
            )
            mask_BxN = sample.completion_mask_BxN
            ref_logps = rollout.reference_logps_BxN(
                ref_params,
                model_cfg,
                prompt_tokens,
                prompt_mask,
                sample.tokens_BxN,
                mask_BxN,
                setup.sampling_config.logps_temperature,
                rl.group_size,
            )
            batch = rollout.PolicyBatch(
                prompt_tokens_BxP=jnp.asarray(prompt_tokens),
                prompt_mask_BxP=jnp.asarray(prompt_mask),
                completion_tokens_BxN=sample.tokens_BxN,
                completion_mask_BxN=mask_BxN,
                old_logps_BxN=sample.logps_BxN * mask_BxN,
                ref_logps_BxN=ref_logps,
                advantages_BxN=jnp.zeros(mask_BxN.shape, jnp.float32),
            )
            texts = rollout.decode_completions(tokenizer, sample.tokens_BxN, mask_BxN)
            judged = rl_rewards.judge_responses(records, texts)
            scores_Bx3, scored_Bx3, raw_Bx3, carry = _trait_scores(
                setup, judged, model_scores_fn, reward_params, batch, carry
            )
            trait_reward_B = rl_rewards.combine_trait_rewards_B(
                scores_Bx3, scored_Bx3, setup.reward_config.trait_weights
            )
            if setup.constraint is not None:
                trait_reward_B = lagrangian.constrained_reward_B(
                    trait_reward_B, scores_Bx3, setup.constraint, carry.lagrange
                )
            reward_B = rl_rewards.sequence_rewards_B(
                trait_reward_B,
                jnp.asarray(judged.correct_B),
                jnp.asarray(judged.malformed_B),
                sample.truncated_B,
                setup.reward_config,
            )
            metrics = _reward_metrics(raw_Bx3, scored_Bx3, judged, sample, reward_B)

            if is_ppo:
                ppo_batch = batch_fn(state.params, batch, reward_B, carry.kl_controller.coef)
                state, update_metrics = update_fn(state, ppo_batch, carry.kl_controller.coef)
            else:
                if rl.kl_mode == "reward":
                    kl_BxN = kl.get_kl_estimator(rl.kl_estimator)(batch.old_logps_BxN, ref_logps)
                    kl_penalty_BxN = kl.kl_reward_penalty_BxN(
                        kl_BxN, mask_BxN, carry.kl_controller.coef
                    )
                    reward_B = reward_B + jnp.sum(kl_penalty_BxN, axis=1)
                estimator = advantages_lib.get_advantage_estimator(rl.advantage_estimator)
                advantages_B = estimator(reward_B, rl.group_size, rl.std_floor)
                batch = dataclasses.replace(batch, advantages_BxN=advantages_B[:, None] * mask_BxN)
                state, update_metrics = update_fn(state, batch, carry.kl_controller.coef)

            update_metrics = {
                f"rl/{k}": float(v) for k, v in jax.device_get(update_metrics).items()
            }
            metrics.update(update_metrics)
            metrics["rl/kl_coef"] = float(carry.kl_controller.coef)
            carry = _advance_carry(
                setup, rl, carry, update_metrics["rl/kl"], scores_Bx3, scored_Bx3
            )
            if setup.constraint is not None:
                metrics["rl/lagrange_multiplier"] = float(carry.lagrange.multiplier)
            _check_finite(step + 1, metrics)
            if (step + 1) % rl.log_every == 0 or step + 1 == rl.steps:
                writer.write_scalars(step + 1, metrics)
                writer.write_texts(step + 1, {"rl/sample": f"{records[0].prompt}\n---\n{texts[0]}"})
            checkpoints.save(manager, _checkpoint_state(state, carry))
            if preemption.requested():
                preemption.save_and_stop(manager, workdir_phase, _checkpoint_state(state, carry))

        checkpoints.save_final(manager, workdir_phase, _checkpoint_state(state, carry))
    return state.params["policy"] if is_ppo else state.params


def _advance_carry(setup, rl, carry: RLCarry, observed_kl, scores_Bx3, scored_Bx3) -> RLCarry:
    controller = kl.update_kl_controller(
        carry.kl_controller, jnp.asarray(observed_kl), rl.kl_target, rl.kl_horizon
    )
    lagrange = carry.lagrange
    if setup.constraint is not None:
        column = setup.constraint.trait_index
        mean_score = masked_mean(scores_Bx3[:, column], scored_Bx3[:, column])
        lagrange = lagrangian.update_multiplier(lagrange, mean_score, setup.constraint)
    return RLCarry(kl_controller=controller, moments=carry.moments, lagrange=lagrange)
