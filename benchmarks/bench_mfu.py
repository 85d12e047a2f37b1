"""Model FLOP utilisation of the SFT train step at several widths, against the measured peak.

  .venv/bin/python benchmarks/bench_mfu.py [--widths 256 512 1024] [--batch 8] [--seq-len 128]
  .venv/bin/python benchmarks/bench_mfu.py --config configs/gpu.py:350m [--peak-size 8192]

MFU = analytic train-step FLOPs / step time / the matmul peak measured in the same run, for
the dtype of the projections' inputs. With `--config FILE[:VARIANT]`, it measures the SFT step
of that config's model instead of the reference widths: its `model` section, its
`sft.batch_size` x `sft.seq_len` batch unless --batch and --seq-len are given, and `sft.dtype`.
On an accelerator, raise `--peak-size` so that the peak's matmul fills the device.
"""

import argparse

import benchlib
import setups

from trait_rl import config_files
from trait_rl.model.config import ModelConfig

REFERENCE_BATCH = 8
REFERENCE_SEQ_LEN = 128


def config_model(spec: str) -> tuple[ModelConfig, int, int]:
    """Return the SFT step's model config, batch size and sequence length of FILE[:VARIANT].

    The vocabulary is `model.vocab_size`, or `data.vocab_size` (the tokenizer's size limit)
    when that is 0, because no tokenizer is trained here.
    """
    path, _, variant = spec.partition(":")
    try:
        config = config_files.load_config(path, variant or None)
    except FileNotFoundError as error:
        raise SystemExit(
            f"invalid --config {spec}: config file not found ({error}). Pass FILE[:VARIANT] of "
            "an existing config, such as configs/gpu.py:350m"
        ) from None
    except ValueError as error:
        raise SystemExit(f"invalid --config {spec}: {error}") from None
    vocab_size = config.model.vocab_size or config.data.vocab_size
    cfg = ModelConfig.from_config(config.model, vocab_size)
    cfg = cfg.with_activation_dtype(config.sft.get("dtype", ""))
    return cfg, config.sft.batch_size, config.sft.seq_len


def measure_model(
    label: str, cfg: ModelConfig, batch: int, seq_len: int, args, peaks: dict
) -> dict:
    """Time the SFT step of `cfg` on random B x T batches and return its row of the table."""
    step, state, make_batch = setups.make_sft(cfg, batch, seq_len)
    holder = {"state": state}

    def run(i: int):
        holder["state"], metrics = step(holder["state"], make_batch(i))
        return metrics

    with benchlib.LoadMonitor() as load:
        times, first = benchlib.time_calls(run, args.warmup, args.repeats)
    summary = benchlib.summarize(times)
    flops = benchlib.train_step_flops(cfg, batch, seq_len)
    achieved = flops / summary["median_s"] / 1e9
    peak_gflops = benchlib.limit_peak(peaks, cfg)
    return {
        "model": label,
        "width": cfg.embed_dim,
        "params": cfg.num_params,
        "batch": batch,
        "seq_len": seq_len,
        "dtype": benchlib.dtype_label(cfg),
        "step_gflop": flops / 1e9,
        **summary,
        "first_call_s": first,
        "tokens_per_s": batch * seq_len / summary["median_s"],
        "achieved_gflops": achieved,
        "mfu": achieved / peak_gflops,
        "mfu_best": flops / summary["min_s"] / 1e9 / peak_gflops,
        "mfu_of_f32_peak": achieved / peaks["float32_gflops"],
        **load.result,
    }


def models_to_measure(args) -> list[tuple[str, ModelConfig, int, int]]:
    """Return (label, model config, batch, seq_len) of each row: the config's, or the widths'."""
    if args.config:
        cfg, batch, seq_len = config_model(args.config)
        return [(args.config, cfg, args.batch or batch, args.seq_len or seq_len)]
    batch = args.batch or REFERENCE_BATCH
    seq_len = args.seq_len or REFERENCE_SEQ_LEN
    return [
        (
            f"width {width}",
            benchlib.reference_config(width, args.dtype, args.matmul_dtype),
            batch,
            seq_len,
        )
        for width in args.widths
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument(
        "--config",
        default="",
        help="FILE[:VARIANT] of a config whose model to measure instead of the widths, "
        "for example configs/gpu.py:350m; its model and sft sections set the dtypes",
    )
    parser.add_argument(
        "--batch", type=int, default=0, help="sequences per step (default 8, or the config's)"
    )
    parser.add_argument(
        "--seq-len", type=int, default=0, help="tokens per sequence (default 128, or the config's)"
    )
    parser.add_argument(
        "--peak-size",
        type=int,
        default=2048,
        help="side of the square matmuls that measure the peak",
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (first compiles)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps")
    benchlib.add_dtype_args(parser)
    args = parser.parse_args()

    models = models_to_measure(args)
    with benchlib.LoadMonitor() as peak_load:
        peaks = benchlib.measure_matmul_peak(args.peak_size)
    rows = [measure_model(*model, args, peaks) for model in models]

    print(
        f"matmul peak: float32 {peaks['float32_gflops']:.1f} GFLOP/s, bf16 inputs with f32 "
        f"accumulation {peaks['bf16_f32acc_gflops']:.1f} GFLOP/s "
        f"(others' CPU share {peak_load.result['others_cpu_share']:.0%})"
    )
    columns = [
        "model",
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
        f"SFT step MFU, {rows[0]['batch']} x {rows[0]['seq_len']} tokens, {rows[0]['dtype']}",
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
