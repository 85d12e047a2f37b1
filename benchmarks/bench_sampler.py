"""Sampler throughput with the KV cache: prefill and decode tokens/s at batch 1 and 64.

  .venv/bin/python benchmarks/bench_sampler.py [--batches 1 64] [--repeats 10]

Reference shape, prompts of 32 tokens and exactly 32 new tokens (no stop ids), temperature 1.
`new_tok_per_s` counts the new tokens over the whole call, prefill included. The prefill alone
is timed with the same model calls the sampler makes before its decode loop, and the decode rate
is the new tokens over the rest of the call. The weights are converted to the sampler's
per-layer form once, as evaluation does before its batches (`sampling.prepare_params`), and
that conversion is timed apart (`weights_prep_s`): a call on stacked weights pays it every time.
"""

import argparse

import benchlib
import jax
import numpy as np
import setups

from trait_rl.model import sampling, transformer


def make_prefill(cfg, total_len: int):
    """Jit what the sampler runs before decoding: the prompt into a fresh cache, last logits."""

    def prefill(weights, tokens_BxP, mask_BxP):
        hidden_BxPxD, cache = transformer.prefill(weights, cfg, tokens_BxP, mask_BxP, total_len)
        return transformer.lm_logits(weights, cfg, hidden_BxPxD[:, -1:]), cache

    return jax.jit(prefill)


def measure_batch(cfg, params, batch: int, args, peaks: dict) -> dict:
    shape = setups.RLShape(prompts=batch, group_size=1, new_tokens=args.new_tokens)
    rng = np.random.default_rng(batch)
    tokens, mask = setups.prompt_batch(shape, cfg.vocab_size, rng)
    sampling_cfg = setups.sampling_config(shape)
    prefill = make_prefill(cfg, shape.prompt_len + shape.new_tokens)

    def run_sample(i: int):
        key = jax.random.key(i)
        return sampling.sample(weights, cfg, sampling_cfg, tokens, mask, key).tokens_BxN

    with benchlib.LoadMonitor() as load:
        prep_times, _ = benchlib.time_calls(
            lambda _i: sampling.prepare_params(params, cfg), args.warmup, args.repeats
        )
        weights = sampling.prepare_params(params, cfg)
        sample_times, first = benchlib.time_calls(run_sample, args.warmup, args.repeats)
        prefill_times, _ = benchlib.time_calls(
            lambda _i: prefill(weights, tokens, mask), args.warmup, args.repeats
        )
    total = benchlib.summarize(sample_times)
    prefill_s = benchlib.summarize(prefill_times)["median_s"]
    new_tokens = batch * shape.new_tokens
    flops = benchlib.sampling_flops(cfg, batch, shape.prompt_len, shape.new_tokens)
    limit_s = flops / (benchlib.limit_peak(peaks, cfg) * 1e9)
    float32_limit_s = flops / (peaks["float32_gflops"] * 1e9)
    return {
        "batch": batch,
        **total,
        "first_call_s": first,
        "new_tok_per_s": new_tokens / total["median_s"],
        "weights_prep_s": benchlib.summarize(prep_times)["median_s"],
        "prefill_s": prefill_s,
        "prefill_tok_per_s": batch * shape.prompt_len / prefill_s,
        "decode_tok_per_s": new_tokens / max(total["median_s"] - prefill_s, 1e-9),
        "gflop": flops / 1e9,
        "limit_s": limit_s,
        "share_of_limit": limit_s / total["median_s"],
        "share_of_f32_limit": float32_limit_s / total["median_s"],
        **load.result,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--new-tokens", type=int, default=benchlib.NEW_TOKENS)
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls (first compiles)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls")
    benchlib.add_dtype_args(parser)
    args = parser.parse_args()

    with benchlib.LoadMonitor() as peak_load:
        peaks = benchlib.measure_matmul_peak()
    cfg = benchlib.reference_config(256, args.dtype, args.matmul_dtype)
    peak = benchlib.limit_peak(peaks, cfg)
    params = transformer.init_params(jax.random.key(0), cfg)
    rows = [measure_batch(cfg, params, batch, args, peaks) for batch in args.batches]

    print(f"matmul peak used for the limit: {peak:.1f} GFLOP/s ({cfg.matmul_input_dtype.__name__})")
    columns = [
        "batch",
        "median_s",
        "spread",
        "new_tok_per_s",
        "weights_prep_s",
        "prefill_tok_per_s",
        "decode_tok_per_s",
        "share_of_limit",
        "share_of_f32_limit",
        "first_call_s",
        "load_avg_1m",
        "others_cpu_share",
    ]
    benchlib.print_table(
        f"sampler, prompts {benchlib.PROMPT_LEN} + {args.new_tokens} new tokens", rows, columns
    )
    benchlib.write_results(
        "sampler",
        {
            "settings": vars(args),
            "matmul_peak": {**peaks, **peak_load.result},
            "rows": rows,
            "memory": benchlib.memory_report(),
        },
    )


if __name__ == "__main__":
    main()
