"""Tunix's GRPO learner at the reference shape on a random-weight Tunix Llama3, JAX CPU.

  benchmarks/.venvs/tunix/bin/python benchmarks/peers/tunix_grpo.py [--warmup 3] [--repeats 10]

8 prompts of exactly 32 words per step, group 8, exactly 32 new tokens (the eos id lies outside
the vocabulary), temperature 1, beta 0.04, one iteration, AdamW. The policy and the reference
are separate copies of the same random model. A step is timed from one `generate` call to the
next, and generation, reference log-probs and the actor update are timed by wrapping the
cluster's methods.
"""

import argparse
import time

import jax
import numpy as np
import optax
import peer_common as pc
import tunix_common as tc
from flax import nnx
from tunix.rl import rl_cluster as rl_cluster_lib
from tunix.rl.grpo import grpo_learner
from tunix.rl.rollout import base_rollout


def even_share_reward(prompts, completions, **_):
    """Score each completion by its share of even token ids, as cheap as our synthetic reward."""
    tokenizer = tc.WordTokenizer()
    scores = []
    for text in completions:
        ids = tokenizer.encode(text)
        scores.append(sum(1 for t in ids if t % 2 == 0) / max(len(ids), 1))
    return scores


def wrap_timed(obj, name: str, log: list[tuple[str, float, float]]) -> None:
    """Replace obj.<name> by a version that appends (name, start, seconds) to log."""
    original = getattr(obj, name)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        out = original(*args, **kwargs)
        # Wait for the dispatched work, so each phase is charged its own compute.
        jax.tree.map(lambda x: x.block_until_ready() if isinstance(x, jax.Array) else x, out)
        log.append((name, start, time.perf_counter() - start))
        return out

    setattr(obj, name, timed)


def build_cluster(steps: int) -> rl_cluster_lib.RLCluster:
    mesh = tc.make_mesh()
    actor = tc.build_model(mesh, seed=0)
    reference = nnx.clone(actor)
    rollout = base_rollout.RolloutConfig(
        max_tokens_to_generate=pc.NEW_TOKENS,
        max_prompt_length=pc.PROMPT_LEN,
        kv_cache_size=pc.PROMPT_LEN + pc.NEW_TOKENS,
        temperature=1.0,
        top_p=1.0,
        top_k=None,
        eos_tokens=[tc.UNREACHABLE_EOS],
    )
    training = rl_cluster_lib.RLTrainingConfig(
        actor_optimizer=optax.adamw(1e-6),
        eval_every_n_steps=10**9,
        max_steps=steps,
        mini_batch_size=pc.PROMPTS,
        train_micro_batch_size=pc.PROMPTS,
        rollout_micro_batch_size=pc.PROMPTS,
        compute_logps_micro_batch_size=pc.PROMPTS,
    )
    config = rl_cluster_lib.ClusterConfig(
        role_to_mesh={role: mesh for role in rl_cluster_lib.Role},
        rollout_engine="vanilla",
        offload_to_cpu=False,
        training_config=training,
        rollout_config=rollout,
    )
    return rl_cluster_lib.RLCluster(
        actor=actor, reference=reference, tokenizer=tc.WordTokenizer(), cluster_config=config
    )


def phase_medians(log, warmup: int) -> tuple[list[float], dict[str, float]]:
    """Return the step times (generate start to generate start) and each phase's median."""
    starts = [start for name, start, _ in log if name == "generate"]
    steps = list(np.diff(starts))[warmup:]
    phases = {}
    for phase in ("generate", "get_ref_per_token_logps", "update_actor"):
        seconds = [s for name, _, s in log if name == phase]
        if len(seconds) > warmup:
            phases[phase] = float(np.median(seconds[warmup:]))
    return steps, phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    # One step more than timed: a step's time runs to the next step's generate call.
    steps = args.warmup + args.repeats + 1

    cluster = build_cluster(steps)
    log: list[tuple[str, float, float]] = []
    for name in ("generate", "get_ref_per_token_logps", "update_actor"):
        wrap_timed(cluster, name, log)
    learner = grpo_learner.GRPOLearner(
        rl_cluster=cluster,
        algo_config=grpo_learner.GRPOConfig(
            num_generations=pc.GROUP, num_iterations=1, beta=pc.KL_COEF, epsilon=0.2
        ),
        reward_fns=even_share_reward,
    )
    prompts = pc.prompt_texts(pc.PROMPTS * steps)
    dataset = [
        {"prompts": np.array(prompts[i * pc.PROMPTS : (i + 1) * pc.PROMPTS])} for i in range(steps)
    ]
    with pc.LoadMonitor() as load:
        learner.train(dataset)

    step_times, phases = phase_medians(log, args.warmup)
    if not step_times:
        raise RuntimeError(f"no timed steps: {len(log)} wrapped calls recorded")
    summary = pc.summarize(step_times)
    row = {
        "peer": "tunix",
        **summary,
        "steps_timed": len(step_times),
        "completions_per_s": pc.PROMPTS * pc.GROUP / summary["median_s"],
        **{f"{name}_s": seconds for name, seconds in phases.items()},
        **load.result,
    }
    pc.write_results(
        "peer_tunix_grpo",
        {"versions": {"jax": jax.__version__}, "settings": vars(args), "row": row},
    )


if __name__ == "__main__":
    main()
