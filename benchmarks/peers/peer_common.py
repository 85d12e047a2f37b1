"""Shape, timing and output helpers shared by the peer scripts (each runs in its own venv).

This file imports only the standard library, because every peer venv lacks `trait_rl`.
"""

import json
import os
import pathlib
import resource
import statistics
import sys
import time

# When set, BENCH_RESULTS_DIR replaces results/ as the JSON folder (sampler_rounds.py sets it).
RESULTS_DIR = pathlib.Path(
    os.environ.get("BENCH_RESULTS_DIR") or pathlib.Path(__file__).resolve().parents[1] / "results"
).resolve()

# The reference shape of the benchmarks (5,245,184 parameters with the untied head).
VOCAB, LAYERS, WIDTH, HEADS, MLP = 2048, 4, 256, 4, 1024
PROMPTS, GROUP, PROMPT_LEN, NEW_TOKENS, KL_COEF = 8, 8, 32, 32, 0.04


def word(i: int) -> str:
    """Return the word of token id i in the peers' word-level vocabulary."""
    return f"w{i}"


def prompt_texts(count: int, seed: int = 0) -> list[str]:
    """Return `count` prompts of exactly PROMPT_LEN words, never the pad or eos words."""
    import random

    rng = random.Random(seed)
    return [
        " ".join(word(rng.randrange(2, VOCAB)) for _ in range(PROMPT_LEN)) for _ in range(count)
    ]


def summarize(times: list[float]) -> dict[str, float]:
    median = statistics.median(times)
    return {
        "median_s": median,
        "min_s": min(times),
        "max_s": max(times),
        "spread": (max(times) - min(times)) / median,
    }


def busy_jiffies() -> tuple[int, int]:
    fields = [int(x) for x in pathlib.Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return sum(fields[:8]) - fields[3] - fields[4], sum(fields[:8])


class LoadMonitor:
    """Share of the machine's CPU time that other processes used during the `with` block."""

    def __enter__(self):
        self.start = busy_jiffies()
        self.own = sum(os.times()[:4])
        self.result = {}
        return self

    def __exit__(self, *exc):
        busy, total = busy_jiffies()
        ticks = os.sysconf("SC_CLK_TCK")
        own = (sum(os.times()[:4]) - self.own) * ticks
        elapsed = max(total - self.start[1], 1)
        self.result = {
            "load_avg_1m": os.getloadavg()[0],
            "own_cpu_share": own / elapsed,
            "others_cpu_share": max(busy - self.start[0] - own, 0) / elapsed,
        }


def write_results(name: str, payload: dict) -> None:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "command": " ".join([pathlib.Path(sys.executable).name, *sys.argv]),
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "uptime": pathlib.Path("/proc/loadavg").read_text().strip(),
        "host_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **payload,
    }
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)
    print(json.dumps(payload, indent=2))
    print(f"wrote {path}")
