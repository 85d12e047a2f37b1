"""GRPO and PPO step time at the reference shape, split into sampling, reference and update.

  .venv/bin/python benchmarks/bench_grpo.py [--algorithms grpo ppo] [--repeats 10] [--warmup 3]

8 prompts x group 8 = 64 completions of exactly 32 tokens after 32-token prompts, kl_coef 0.04,
random weights and a synthetic on-device reward (so no judge or reward model is timed). Each phase
is timed up to `block_until_ready`, and the step time is their sum. The FLOP limit is the step's
analytic FLOPs at the float32 matmul peak measured in the same run. It counts every row's prompt,
as the peers run it. `executed_gflop` is what the library runs, each group's prompt once.
"""

import argparse
import time

import benchlib
import jax
import numpy as np
import setups


def _timed(phases: dict[str, float], name: str, fn, *args):
    start = time.perf_counter()
    out = benchlib.block(fn(*args))
    phases[name] = phases.get(name, 0.0) + time.perf_counter() - start
    return out


def grpo_flops(cfg, shape: setups.RLShape) -> dict[str, int]:
    seq_len = shape.prompt_len + shape.new_tokens
    return {
        "sampling": benchlib.sampling_flops(cfg, shape.batch, shape.prompt_len, shape.new_tokens),
        "reference": benchlib.forward_flops(cfg, shape.batch, seq_len),
        "update": benchlib.train_step_flops(cfg, shape.batch, seq_len),
    }


def shared_prompt_grpo_flops(cfg, shape: setups.RLShape) -> int:
    """Return the FLOPs of one GRPO step as run, each group's prompt going through the model once.

    `grpo_flops` counts the work of running every row's prompt, as the peers do. The library
    runs the 8 distinct prompts once each in the sampler's prefill, the reference and the update
    (`prompt_repeats`). The completions then attend to the shared prompt keys and values.
    """
    prompts, batch = shape.prompts, shape.batch
    p, seq_len = shape.prompt_len, shape.prompt_len + shape.new_tokens
    prefill = benchlib.sampling_flops(cfg, prompts, p, 1)
    decode = benchlib.sampling_flops(cfg, batch, p, shape.new_tokens)
    decode -= benchlib.sampling_flops(cfg, batch, p, 1)
    completions = benchlib.forward_flops(cfg, batch, seq_len) - benchlib.forward_flops(
        cfg, batch, p
    )
    forward = benchlib.forward_flops(cfg, prompts, p) + completions
    return prefill + decode + forward + 3 * forward


def ppo_flops(cfg, shape: setups.RLShape, ppo_config) -> dict[str, int]:
    flops = grpo_flops(cfg, shape)
    seq_len = shape.prompt_len + shape.new_tokens
    flops["values_gae"] = benchlib.forward_flops(cfg, shape.batch, seq_len)
    flops["update"] *= ppo_config.epochs  # every epoch passes over the whole batch once
    return flops


def run_steps(step_fn, args) -> tuple[list[dict[str, float]], float]:
    """Run warmup + repeats steps; return each timed step's phases and the first step's time."""
    records = []
    first = 0.0
    for i in range(args.warmup + args.repeats):
        phases: dict[str, float] = {}
        step_fn(i, phases)
        if i == 0:
            first = sum(phases.values())
        if i >= args.warmup:
            records.append(phases)
    return records, first


def grpo_step_fn(cfg, shape, rollout_matmul_dtype: str = "", seed: int = 0):
    params, sample, reference = setups.make_rollout_parts(cfg, shape, seed, rollout_matmul_dtype)
    update, state, _ = setups.make_grpo_update(cfg, shape, params)
    holder = {"state": state}
    rng = np.random.default_rng(seed)

    def step(i: int, phases: dict[str, float]) -> None:
        tokens, mask = setups.prompt_batch(shape, cfg.vocab_size, rng)
        policy = holder["state"].params
        output = _timed(phases, "sampling", sample, policy, tokens, mask, jax.random.key(i))
        ref_logps = _timed(phases, "reference", reference, tokens, mask, output)
        batch = setups.policy_batch(tokens, mask, output, ref_logps)
        holder["state"], _ = _timed(phases, "update", update, holder["state"], batch)

    return step, grpo_flops(cfg, shape), shared_prompt_grpo_flops(cfg, shape)


def ppo_step_fn(cfg, shape, rollout_matmul_dtype: str = "", seed: int = 0):
    params, sample, reference = setups.make_rollout_parts(cfg, shape, seed, rollout_matmul_dtype)
    values_and_gae, update, state, ppo_config = setups.make_ppo_update(cfg, shape, params)
    holder = {"state": state}
    rng = np.random.default_rng(seed)

    def step(i: int, phases: dict[str, float]) -> None:
        tokens, mask = setups.prompt_batch(shape, cfg.vocab_size, rng)
        policy = holder["state"].params["policy"]
        output = _timed(phases, "sampling", sample, policy, tokens, mask, jax.random.key(i))
        ref_logps = _timed(phases, "reference", reference, tokens, mask, output)
        batch = setups.policy_batch(tokens, mask, output, ref_logps)
        ppo_batch = _timed(phases, "values_gae", values_and_gae, holder["state"], batch)
        holder["state"], _ = _timed(phases, "update", update, holder["state"], ppo_batch)

    return step, ppo_flops(cfg, shape, ppo_config), None


def summarize_algorithm(name, records, first, flops, executed, shape, peak_gflops, load) -> dict:
    totals = [sum(phases.values()) for phases in records]
    summary = benchlib.summarize(totals)
    row = {"algorithm": name, **summary, "first_step_s": first}
    row["completions_per_s"] = shape.batch / summary["median_s"]
    for phase in records[0]:
        row[f"{phase}_s"] = float(np.median([phases[phase] for phases in records]))
        row[f"{phase}_gflop"] = flops[phase] / 1e9
        row[f"{phase}_share_of_limit"] = flops[phase] / (peak_gflops * 1e9) / row[f"{phase}_s"]
    total_flops = sum(flops.values())
    row["step_gflop"] = total_flops / 1e9
    row["limit_s"] = total_flops / (peak_gflops * 1e9)
    row["share_of_limit"] = row["limit_s"] / summary["median_s"]
    if executed is not None:
        row["executed_gflop"] = executed / 1e9
        row["executed_gflop_per_s"] = executed / 1e9 / summary["median_s"]
    return {**row, **load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithms", nargs="+", default=["grpo", "ppo"])
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (first compiles)")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps")
    benchlib.add_dtype_args(parser)
    parser.add_argument("--width", type=int, default=256, help="model width (reference: 256)")
    parser.add_argument(
        "--rollout-matmul-dtype",
        default="",
        choices=["", "float32", "bfloat16"],
        help="matmul input dtype of the sampler only (rl.rollout_matmul_dtype); '' = the model's",
    )
    args = parser.parse_args()

    with benchlib.LoadMonitor() as peak_load:
        peaks = benchlib.measure_matmul_peak()
    cfg = benchlib.reference_config(args.width, args.dtype, args.matmul_dtype)
    peak = benchlib.limit_peak(peaks, cfg)
    shape = setups.RLShape()
    builders = {"grpo": grpo_step_fn, "ppo": ppo_step_fn}
    rows = []
    for name in args.algorithms:
        if name not in builders:
            parser.error(f"invalid --algorithms value {name!r}; expected grpo or ppo")
        step, flops, executed = builders[name](cfg, shape, args.rollout_matmul_dtype)
        with benchlib.LoadMonitor() as load:
            records, first = run_steps(step, args)
        row = summarize_algorithm(name, records, first, flops, executed, shape, peak, load.result)
        row["share_of_f32_limit"] = row["share_of_limit"] * peak / peaks["float32_gflops"]
        rows.append(row)

    print(f"matmul peak used for the limit: {peak:.1f} GFLOP/s ({cfg.matmul_input_dtype.__name__})")
    columns = [
        "algorithm",
        "median_s",
        "spread",
        "completions_per_s",
        "sampling_s",
        "reference_s",
        "values_gae_s",
        "update_s",
        "step_gflop",
        "share_of_limit",
        "share_of_f32_limit",
        "executed_gflop",
        "executed_gflop_per_s",
        "first_step_s",
        "load_avg_1m",
        "others_cpu_share",
    ]
    title = (
        f"RL step, {shape.prompts} prompts x group {shape.group_size}, "
        f"{shape.prompt_len} + {shape.new_tokens} tokens, {benchlib.dtype_label(cfg)}"
    )
    if args.rollout_matmul_dtype:
        title += f", rollouts with {args.rollout_matmul_dtype} matmuls"
    benchlib.print_table(
        title,
        rows,
        columns,
    )
    benchlib.write_results(
        "grpo",
        {
            "settings": vars(args),
            "matmul_peak": {**peaks, **peak_load.result},
            "rows": rows,
            "memory": benchlib.memory_report(),
        },
    )


if __name__ == "__main__":
    main()
