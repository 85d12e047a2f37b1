"""How the SFT step and the sampler cost grow with sequence length, batch and model width.

  .venv/bin/python benchmarks/bench_scaling.py [--repeats 3]

Each row varies one axis from the base point (width 256, SFT batch 8 x 128 tokens, sampler
batch 64 with 32-token prompts and 32 new tokens) and reports the median time, the analytic
GFLOP and the achieved GFLOP/s, so a row whose rate drops shows where overhead dominates.
"""

import argparse

import benchlib
import jax
import numpy as np
import setups

from trait_rl.model import sampling, transformer


def time_sft(width: int, batch: int, seq_len: int, args) -> dict:
    cfg = benchlib.reference_config(width)
    step, state, make_batch = setups.make_sft(cfg, batch, seq_len)
    holder = {"state": state}

    def run(i: int):
        holder["state"], metrics = step(holder["state"], make_batch(i))
        return metrics

    times, _ = benchlib.time_calls(run, 1, args.repeats)
    return {"flops": benchlib.train_step_flops(cfg, batch, seq_len), "times": times}


def time_sampler(width: int, batch: int, new_tokens: int, args) -> dict:
    cfg = benchlib.reference_config(width)
    params = transformer.init_params(jax.random.key(0), cfg)
    shape = setups.RLShape(prompts=batch, group_size=1, new_tokens=new_tokens)
    tokens, mask = setups.prompt_batch(shape, cfg.vocab_size, np.random.default_rng(0))
    sampling_cfg = setups.sampling_config(shape)

    def run(i: int):
        return sampling.sample(params, cfg, sampling_cfg, tokens, mask, jax.random.key(i))

    times, _ = benchlib.time_calls(run, 1, args.repeats)
    flops = benchlib.sampling_flops(cfg, batch, shape.prompt_len, new_tokens)
    return {"flops": flops, "times": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per point")
    args = parser.parse_args()

    points = [
        ("sft", "seq_len", value, lambda v: time_sft(256, 8, v, args)) for value in (64, 128, 256)
    ]
    points += [("sft", "batch", value, lambda v: time_sft(256, v, 128, args)) for value in (4, 16)]
    points += [("sft", "width", value, lambda v: time_sft(v, 8, 128, args)) for value in (128, 512)]
    points += [
        ("sampler", "batch", value, lambda v: time_sampler(256, v, 32, args))
        for value in (1, 8, 64)
    ]
    points += [
        ("sampler", "new_tokens", value, lambda v: time_sampler(256, 64, v, args))
        for value in (16, 64)
    ]
    points += [
        ("sampler", "width", value, lambda v: time_sampler(v, 64, 32, args)) for value in (128, 512)
    ]

    rows = []
    with benchlib.LoadMonitor() as load:
        for cost, axis, value, measure in points:
            result = measure(value)
            median = benchlib.summarize(result["times"])["median_s"]
            rows.append(
                {
                    "cost": cost,
                    "axis": axis,
                    "value": value,
                    "median_s": median,
                    "gflop": result["flops"] / 1e9,
                    "achieved_gflops": result["flops"] / median / 1e9,
                }
            )
    benchlib.print_table(
        "scaling (base: width 256, SFT 8 x 128, sampler 64 x (32 + 32))",
        rows,
        ["cost", "axis", "value", "median_s", "gflop", "achieved_gflops"],
    )
    print(f"load during the run: {load.result}")
    benchlib.write_results(
        "scaling",
        {
            "settings": vars(args),
            "rows": rows,
            "load": load.result,
            "memory": benchlib.memory_report(),
        },
    )


if __name__ == "__main__":
    main()
