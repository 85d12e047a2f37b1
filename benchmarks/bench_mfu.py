"""Model FLOP utilisation of the SFT train step at several widths, against the measured peak.

  .venv/bin/python benchmarks/bench_mfu.py [--widths 256 512 1024] [--batch 8] [--seq-len 128]

MFU = analytic train-step FLOPs / step time / the float32 matmul peak measured in the same run.
"""

import argparse

import benchlib
import setups


def measure_width(
    width: int, args: argparse.Namespace, peak_gflops: float, f32_peak: float
) -> dict:
    cfg = benchlib.reference_config(width, args.dtype, args.matmul_dtype)
    step, state, make_batch = setups.make_sft(cfg, args.batch, args.seq_len)
    holder = {"state": state}

    def run(i: int):
        holder["state"], metrics = step(holder["state"], make_batch(i))
        return metrics

    with benchlib.LoadMonitor() as load:
        times, first = benchlib.time_calls(run, args.warmup, args.repeats)
    summary = benchlib.summarize(times)
    flops = benchlib.train_step_flops(cfg, args.batch, args.seq_len)
    achieved = flops / summary["median_s"] / 1e9
    return {
        "width": width,
        "params": cfg.num_params,
        "step_gflop": flops / 1e9,
        **summary,
        "first_call_s": first,
        "tokens_per_s": args.batch * args.seq_len / summary["median_s"],
        "achieved_gflops": achieved,
        "mfu": achieved / peak_gflops,
        "mfu_best": flops / summary["min_s"] / 1e9 / peak_gflops,
        "mfu_of_f32_peak": achieved / f32_peak,
        **load.result,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--batch", type=int, default=8, help="sequences per step")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per sequence")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (first compiles)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps")
    benchlib.add_dtype_args(parser)
    args = parser.parse_args()

    with benchlib.LoadMonitor() as peak_load:
        peaks = benchlib.measure_matmul_peak()
    cfg = benchlib.reference_config(256, args.dtype, args.matmul_dtype)
    peak = benchlib.limit_peak(peaks, cfg)
    f32_peak = peaks["float32_gflops"]
    rows = [measure_width(width, args, peak, f32_peak) for width in args.widths]

    print(
        f"matmul peak: float32 {peaks['float32_gflops']:.1f} GFLOP/s, bf16 inputs with f32 "
        f"accumulation {peaks['bf16_f32acc_gflops']:.1f} GFLOP/s "
        f"(others' CPU share {peak_load.result['others_cpu_share']:.0%})"
    )
    columns = [
        "width",
        "params",
        "step_gflop",
        "median_s",
        "spread",
        "tokens_per_s",
        "achieved_gflops",
        "mfu",
        "mfu_best",
        "mfu_of_f32_peak",
        "load_avg_1m",
        "others_cpu_share",
    ]
    benchlib.print_table(
        f"SFT step MFU, batch {args.batch} x {args.seq_len} tokens, {benchlib.dtype_label(cfg)}",
        rows,
        columns,
    )
    benchlib.write_results(
        "mfu",
        {
            "settings": vars(args),
            "matmul_peak": {**peaks, **peak_load.result},
            "rows": rows,
            "memory": benchlib.memory_report(),
        },
    )


if __name__ == "__main__":
    main()
