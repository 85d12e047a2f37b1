"""Shared pieces of the benchmarks: the reference shape, FLOP counts, timers, load and memory.

FLOPs are counted analytically. A matmul of an M x K by a K x N matrix is 2*M*K*N FLOPs. A
forward pass over T tokens costs 2 * (matmul parameters) * T plus the attention products. The
backward pass costs twice the forward, so a train step is 3x the forward. The embedding lookup is
a gather, so its table is not a matmul parameter; the untied LM head is.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

# The scripts run from a checkout, where neither `trait_rl` nor `configs` need be installed.
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from trait_rl import host_memory  # noqa: E402
from trait_rl.model.config import ModelConfig  # noqa: E402

# Measure what the command-line scripts run, with their host allocator setting (off unless
# TRAIT_RL_RETAIN_HOST_MEMORY=1), applied before the first JAX computation as it must be.
HOST_MEMORY_RETAINED = host_memory.apply_env_setting()

# When set, BENCH_RESULTS_DIR replaces results/ as the JSON folder (sampler_rounds.py sets it).
RESULTS_DIR = pathlib.Path(
    os.environ.get("BENCH_RESULTS_DIR") or REPO_ROOT / "benchmarks" / "results"
).resolve()

# Prompts are PROMPT_LEN tokens and every completion exactly NEW_TOKENS tokens long.
PROMPT_LEN = 32
NEW_TOKENS = 32


def reference_config(
    embed_dim: int = 256, dtype: str = "float32", matmul_dtype: str = ""
) -> ModelConfig:
    """Return the Llama-style reference shape: 4 layers, 4 heads, MLP 4 x width, vocab 2048.

    At width 256 it has 5,245,184 parameters with an untied LM head.
    """
    return ModelConfig(
        vocab_size=2048,
        num_layers=4,
        embed_dim=embed_dim,
        num_heads=4,
        num_kv_heads=4,
        head_dim=0,
        mlp_dim=4 * embed_dim,
        max_len=max(256, PROMPT_LEN + NEW_TOKENS),
        tie_embeddings=False,
        dtype=dtype,
        matmul_dtype=matmul_dtype,
    )


def add_dtype_args(parser: argparse.ArgumentParser) -> None:
    """Add --dtype and --matmul-dtype, the `model.dtype` and `model.matmul_dtype` settings."""
    parser.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16"], help="activation dtype"
    )
    parser.add_argument(
        "--matmul-dtype",
        default="",
        choices=["", "float32", "bfloat16"],
        help="dtype of the projections' inputs, accumulated in the activation dtype "
        "(model.matmul_dtype); '' follows --dtype",
    )


def dtype_label(cfg: ModelConfig) -> str:
    """Return "float32", "bfloat16", or "float32, bfloat16 matmuls" for table titles."""
    label = cfg.dtype
    if cfg.matmul_dtype and cfg.matmul_dtype != cfg.dtype:
        label += f", {cfg.matmul_dtype} matmuls"
    return label


def limit_peak(peaks: dict, cfg: ModelConfig) -> float:
    """Return the measured matmul peak for the dtype of the config's projection inputs."""
    bf16 = cfg.matmul_input_dtype == jnp.bfloat16
    return peaks["bf16_f32acc_gflops" if bf16 else "float32_gflops"]


# ----------------------------------------------------------------------------- FLOP counts


def matmul_params(cfg: ModelConfig, with_head: bool = True) -> int:
    """Count the weights that enter a matmul: every projection, plus the LM head when asked."""
    embedding_table = cfg.vocab_size * cfg.embed_dim
    positions = cfg.max_len * cfg.embed_dim if cfg.position_embedding == "learned" else 0
    norms = cfg.embed_dim * (2 * cfg.num_layers + 1)
    body = cfg.num_params - embedding_table - positions - norms
    if not cfg.tie_embeddings:
        body -= embedding_table  # The untied head, counted separately below.
    return body + (embedding_table if with_head else 0)


def attention_flops(cfg: ModelConfig, query_context_pairs: int) -> int:
    """Forward FLOPs of QK^T and PV summed over layers, for the given (query, key) pair count."""
    width = cfg.num_heads * cfg.head_dim
    return 2 * 2 * cfg.num_layers * width * query_context_pairs


def causal_pairs(seq_len: int) -> int:
    """Count the (query, key) pairs a causal mask keeps in one sequence: T (T + 1) / 2."""
    return seq_len * (seq_len + 1) // 2


def forward_flops(cfg: ModelConfig, batch: int, seq_len: int) -> int:
    """Return the FLOPs of a full forward pass (logits at every position) of a B x T batch."""
    dense = 2 * matmul_params(cfg) * batch * seq_len
    return dense + batch * attention_flops(cfg, causal_pairs(seq_len))


def train_step_flops(cfg: ModelConfig, batch: int, seq_len: int) -> int:
    """Return the FLOPs of forward + backward of a B x T batch: 3x the forward."""
    return 3 * forward_flops(cfg, batch, seq_len)


def sampling_flops(cfg: ModelConfig, batch: int, prompt_len: int, new_tokens: int) -> int:
    """Return the FLOPs a KV-cached sampler needs for `new_tokens` tokens after the prompt.

    The prefill runs the body on every prompt token and the head on the last one. Each of the
    following new_tokens - 1 decode steps runs one token through body and head, attending to
    every earlier token. The last sampled token needs no forward.
    """
    body = matmul_params(cfg, with_head=False)
    head = cfg.embed_dim * cfg.vocab_size
    prefill = 2 * body * prompt_len + 2 * head + attention_flops(cfg, causal_pairs(prompt_len))
    decode = 0
    for step in range(new_tokens - 1):
        context = prompt_len + step + 1
        decode += 2 * (body + head) + attention_flops(cfg, context)
    return batch * (prefill + decode)


# ----------------------------------------------------------------------------- timing


def block(tree: Any) -> Any:
    """Wait for every array in `tree`, so a timer stops after the device finished."""
    return jax.block_until_ready(tree)


def time_calls(fn: Callable[[int], Any], warmup: int, repeats: int) -> tuple[list[float], float]:
    """Call `fn(i)` warmup + repeats times; return the timed seconds and the first call's seconds.

    The first call includes compilation, so it is returned apart and never enters a median.
    """
    first = 0.0
    for i in range(warmup):
        start = time.perf_counter()
        block(fn(i))
        if i == 0:
            first = time.perf_counter() - start
    times = []
    for i in range(warmup, warmup + repeats):
        start = time.perf_counter()
        block(fn(i))
        times.append(time.perf_counter() - start)
    return times, first


def summarize(times: Sequence[float]) -> dict[str, float]:
    """Median, min and max of a list of seconds, plus the spread (max - min) / median."""
    median = statistics.median(times)
    return {
        "median_s": median,
        "min_s": min(times),
        "max_s": max(times),
        "spread": (max(times) - min(times)) / median if median else 0.0,
    }


# ----------------------------------------------------------------------------- machine peak


def measure_matmul_peak(size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Measure the best matmul rate of this device in GFLOP/s, float32 and bf16 x bf16 -> f32.

    The best of `repeats` runs is taken, because on a shared machine every slower run only
    measures the other processes.
    """
    key_a, key_b = jax.random.split(jax.random.key(0))
    a_f32 = jax.random.normal(key_a, (size, size), jnp.float32)
    b_f32 = jax.random.normal(key_b, (size, size), jnp.float32)
    a_bf16, b_bf16 = a_f32.astype(jnp.bfloat16), b_f32.astype(jnp.bfloat16)

    matmul_f32 = jax.jit(lambda a, b: a @ b)
    matmul_bf16 = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
    flops = 2 * size**3
    peaks = {}
    for name, fn, args in (
        ("float32", matmul_f32, (a_f32, b_f32)),
        ("bf16_f32acc", matmul_bf16, (a_bf16, b_bf16)),
    ):
        times, _ = time_calls(lambda _i, fn=fn, args=args: fn(*args), warmup=2, repeats=repeats)
        peaks[f"{name}_gflops"] = flops / min(times) / 1e9
    return peaks


# ----------------------------------------------------------------------------- load and memory


def _busy_jiffies() -> tuple[int, int]:
    """Return (busy, total) jiffies of all cores from /proc/stat."""
    fields = [int(x) for x in pathlib.Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user time
    return total - idle, total


@dataclasses.dataclass
class LoadMonitor:
    """Measure how much CPU other processes used while a benchmark ran.

    Use as a context manager. `others_cpu_share` is the other processes' busy time over the
    machine's total time (1.0 = every core busy with someone else's work).
    """

    result: dict[str, float] = dataclasses.field(default_factory=dict)

    def __enter__(self) -> "LoadMonitor":
        self._busy, self._total = _busy_jiffies()
        self._own = sum(os.times()[:4])
        return self

    def __exit__(self, *exc) -> None:
        busy, total = _busy_jiffies()
        own_seconds = sum(os.times()[:4]) - self._own
        ticks = os.sysconf("SC_CLK_TCK")
        elapsed_jiffies = max(total - self._total, 1)
        others = (busy - self._busy) - own_seconds * ticks
        self.result = {
            "load_avg_1m": os.getloadavg()[0],
            "own_cpu_share": own_seconds * ticks / elapsed_jiffies,
            "others_cpu_share": max(others, 0) / elapsed_jiffies,
        }


def memory_report() -> dict[str, float]:
    """Peak host RSS of this process in MiB, and the device's peak bytes on an accelerator."""
    report = {"host_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    device = jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        report["device_peak_mib"] = stats.get("peak_bytes_in_use", 0) / 2**20
    return report


def machine_report() -> dict[str, Any]:
    """CPU model, core count, accelerator and versions, for the header of every result file."""
    cpu_model = "unknown"
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_model": cpu_model,
        "cpu_cores": os.cpu_count(),
        "device": str(jax.devices()[0]),
        "platform": jax.devices()[0].platform,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "host_memory_retained": HOST_MEMORY_RETAINED,
        "uptime": pathlib.Path("/proc/loadavg").read_text().strip(),
    }


# ----------------------------------------------------------------------------- output


def print_table(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Print `rows` as a fixed-width table of `columns`; floats get 4 significant digits."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    cells = [[cell(row.get(col, "")) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(col.rjust(w) for col, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(value.rjust(w) for value, w in zip(row, widths, strict=True)))


def write_results(name: str, payload: dict[str, Any]) -> pathlib.Path:
    """Write `payload` plus the machine report to results/<name>.json, atomically via a .tmp."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "command": " ".join([pathlib.Path(sys.executable).name, *sys.argv]),
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine_report(),
        **payload,
    }
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    print(f"\nwrote {path}")
    return path
