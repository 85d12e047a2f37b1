"""Break the GRPO update and the reference forward into parts, to show where the time goes.

  .venv/bin/python benchmarks/profile_grpo.py [--repeats 5]

At the reference shape (64 sequences of 32 + 32 tokens) it times, each as its own jit: the
backbone alone, the reference scorer (backbone + logits + log-softmax) in float32 and bfloat16,
the loss gradient without the optimizer, the library's full GRPO step and the eager advantage
computation the RL loop runs between jits. The scorer and the gradient run twice: with every
row's prompt (the FLOPs the rates count) and with each group's prompt run once.
"""

import argparse
import dataclasses

import benchlib
import jax
import jax.numpy as jnp
import numpy as np
import setups

from trait_rl.model import transformer
from trait_rl.training import advantages, grpo, rollout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    shape = setups.RLShape()
    cfg = benchlib.reference_config()
    params, sample, reference = setups.make_rollout_parts(cfg, shape)
    update, state, step_fn = setups.make_grpo_update(cfg, shape, params)
    tokens, mask = setups.prompt_batch(shape, cfg.vocab_size, np.random.default_rng(0))
    output = benchlib.block(sample(params, tokens, mask, jax.random.key(0)))
    ref_logps = reference(tokens, mask, output)
    batch = setups.policy_batch(tokens, mask, output, ref_logps)
    reward_B = setups.synthetic_reward_B(batch.completion_tokens_BxN)
    batch = dataclasses.replace(
        batch,
        advantages_BxN=advantages.grpo_advantages(reward_B, shape.group_size, 1e-2)[:, None]
        * batch.completion_mask_BxN,
    )
    seq_tokens = jnp.concatenate([tokens, output.tokens_BxN], axis=1)
    seq_mask = jnp.ones_like(seq_tokens)
    loss_config = grpo.policy_loss_config_from(setups.rl_config(shape, "grpo"))
    kl_coef = jnp.asarray(shape.kl_coef, jnp.float32)
    cfg_bf16 = dataclasses.replace(cfg, dtype="bfloat16")

    backbone = jax.jit(lambda p, t, m: transformer.backbone(p, cfg, t, m)[0])

    def loss(p, b, prompt_repeats):
        return grpo.grpo_loss(p, cfg, b, kl_coef, loss_config, prompt_repeats)[0]

    loss_grad = jax.jit(jax.grad(loss), static_argnums=2)
    completions = (tokens, mask, output.tokens_BxN, output.completion_mask_BxN, 1.0)
    holder = {"state": state}

    def full_step(_):
        holder["state"], metrics = step_fn(holder["state"], batch, kl_coef)
        return metrics

    def eager_advantages(_):
        estimator = advantages.get_advantage_estimator("grpo")
        return estimator(setups.synthetic_reward_B(output.tokens_BxN), shape.group_size, 1e-2)

    group = shape.group_size
    scorer = rollout.reference_logps_BxN
    # name: (call, multiple of the every-row forward FLOPs, or 0 where the count differs)
    parts = {
        "backbone forward, every row's prompt": (
            lambda _: backbone(params, seq_tokens, seq_mask),
            1,
        ),
        "reference, every row's prompt": (lambda _: scorer(params, cfg, *completions, 1), 1),
        "reference, every row's prompt, bfloat16": (
            lambda _: scorer(params, cfg_bf16, *completions, 1),
            1,
        ),
        "reference, shared prompts": (lambda _: scorer(params, cfg, *completions, group), 0),
        "loss gradient, every row's prompt": (lambda _: loss_grad(params, batch, 1), 3),
        "loss gradient, shared prompts": (lambda _: loss_grad(params, batch, group), 0),
        "GRPO step, shared prompts (gradient + AdamW)": (full_step, 0),
        "eager advantages between jits": (eager_advantages, 0),
    }
    seq_len = shape.prompt_len + shape.new_tokens
    forward = benchlib.forward_flops(cfg, shape.batch, seq_len)
    rows = []
    with benchlib.LoadMonitor() as load:
        for name, (fn, forward_multiple) in parts.items():
            times, _ = benchlib.time_calls(fn, 2, args.repeats)
            median = benchlib.summarize(times)["median_s"]
            row = {"part": name, "median_s": median, "min_s": min(times)}
            if forward_multiple:
                row["gflops"] = forward_multiple * forward / median / 1e9
            rows.append(row)
    benchlib.print_table(
        "GRPO profile, 64 x (32 + 32) tokens", rows, ["part", "median_s", "min_s", "gflops"]
    )
    print(f"load during the run: {load.result}")
    benchlib.write_results("profile_grpo", {"rows": rows, "load": load.result})


if __name__ == "__main__":
    main()
