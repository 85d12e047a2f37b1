"""Sampler against its peers over several rounds, one process per implementation and round.

  .venv/bin/python benchmarks/sampler_rounds.py [--rounds 3] [--batches 1 64] [--repeats 10]
      [--matmul-dtype bfloat16]

On a shared 2-core virtual machine, processes of the same code run at different speeds, for
ours and the peers alike: five processes of our batch-1 sampler gave 891-1,563 new tokens/s on
a 2-core AMD EPYC. A single run of each script therefore gives a ratio that can pass in one
run and fail in the next. This script runs
`bench_sampler.py`, transformers `generate` and Tunix's sampler once per round, in a rotating
order, and reports each implementation's median over the rounds and the ratios of those
medians. Each round's JSON files stay under results/sampler_rounds/round<N>/, and the summary
goes to results/sampler_rounds.json (under $BENCH_RESULTS_DIR instead of results/ when that is
set). A peer whose venv is not installed (`benchmarks/peers/install.sh`) is skipped and
reported.
"""

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys

import benchlib

BENCH_DIR = benchlib.REPO_ROOT / "benchmarks"
ROUNDS_DIR = benchlib.RESULTS_DIR / "sampler_rounds"


# name -> (venv python relative to the repository, script, working directory, result file)
IMPLEMENTATIONS = {
    "ours": (".venv/bin/python", "bench_sampler.py", BENCH_DIR, "sampler.json"),
    "generate": (
        "benchmarks/.venvs/trl/bin/python",
        "hf_generate.py",
        BENCH_DIR / "peers",
        "peer_hf_generate.json",
    ),
    "tunix": (
        "benchmarks/.venvs/tunix/bin/python",
        "tunix_sampler.py",
        BENCH_DIR / "peers",
        "peer_tunix_sampler.json",
    ),
}


def available(name: str) -> bool:
    """Return whether an implementation's interpreter exists (and a peer venv is marked done)."""
    python = benchlib.REPO_ROOT / IMPLEMENTATIONS[name][0]
    if name == "ours":
        return python.exists()
    return python.exists() and (python.parents[1] / ".installed").exists()


def run_once(name: str, round_dir: pathlib.Path, args) -> dict:
    """Run one implementation in its own process and return its rows keyed by batch size."""
    python, script, cwd, result_file = IMPLEMENTATIONS[name]
    command = [
        str(benchlib.REPO_ROOT / python),
        script,
        "--batches",
        *map(str, args.batches),
        "--repeats",
        str(args.repeats),
    ]
    if name == "ours" and args.matmul_dtype:
        command += ["--matmul-dtype", args.matmul_dtype]
    env = {**os.environ, "BENCH_RESULTS_DIR": str(round_dir)}
    print(f"== {round_dir.name}: {name} (load: {os.getloadavg()[0]:.2f})", flush=True)
    done = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL)
    if done.returncode != 0:
        sys.exit(
            f"error: {name} failed in {round_dir.name} with exit code {done.returncode} (its "
            f"error output is above); rerun it alone with `cd {cwd} && {' '.join(command)}`"
        )
    result = json.loads((round_dir / result_file).read_text())
    return {int(row["batch"]): row for row in result["rows"]}


def rotated(names: list[str], round_index: int) -> list[str]:
    """Return `names` rotated by the round index, so no implementation always runs first."""
    shift = round_index % len(names)
    return names[shift:] + names[:shift]


def summarize(rounds: list[dict[str, dict]], names: list[str], batches: list[int]) -> list[dict]:
    """Return one row per batch with each implementation's median new tokens/s and our ratios."""
    rows = []
    for batch in batches:
        row = {"batch": batch}
        for name in names:
            rates = [r[name][batch]["new_tok_per_s"] for r in rounds]
            row[f"{name}_tok_per_s"] = statistics.median(rates)
            row[f"{name}_range"] = [min(rates), max(rates)]
        for share in ("share_of_limit", "share_of_f32_limit"):
            shares = [r["ours"][batch][share] for r in rounds]
            row[f"ours_{share}"] = statistics.median(shares)
            row[f"ours_{share}_range"] = [min(shares), max(shares)]
        for peer in names[1:]:
            row[f"vs_{peer}"] = row["ours_tok_per_s"] / row[f"{peer}_tok_per_s"]
            per_round = [
                r["ours"][batch]["new_tok_per_s"] / r[peer][batch]["new_tok_per_s"] for r in rounds
            ]
            row[f"vs_{peer}_per_round"] = per_round
        rows.append(row)
    return rows


def run_rounds(names: list[str], args) -> list[dict[str, dict]]:
    """Run every round into a fresh folder that replaces ROUNDS_DIR only once all succeeded.

    A failed or interrupted run removes its partial files and leaves the previous ones whole.
    """
    staging = ROUNDS_DIR.with_name(ROUNDS_DIR.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    rounds = []
    try:
        for index in range(args.rounds):
            round_dir = staging / f"round{index + 1}"
            round_dir.mkdir(parents=True)
            rounds.append({name: run_once(name, round_dir, args) for name in rotated(names, index)})
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(ROUNDS_DIR, ignore_errors=True)
    staging.rename(ROUNDS_DIR)
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per process")
    parser.add_argument(
        "--matmul-dtype",
        default="",
        help="model.matmul_dtype of our sampler, passed to bench_sampler.py",
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"invalid --rounds={args.rounds}: use at least 1")
    if args.repeats < 1:
        parser.error(f"invalid --repeats={args.repeats}: use at least 1")
    if min(args.batches) < 1:
        parser.error(f"invalid --batches={args.batches}: every batch size must be at least 1")

    names = [name for name in IMPLEMENTATIONS if available(name)]
    skipped = [name for name in IMPLEMENTATIONS if name not in names]
    if "ours" not in names:
        sys.exit("error: .venv is missing; run `make venv` first")
    for name in skipped:
        print(f"== skip {name}: its venv is not installed (bash benchmarks/peers/install.sh)")

    rounds = run_rounds(names, args)
    rows = summarize(rounds, names, args.batches)
    columns = ["batch", *(f"{name}_tok_per_s" for name in names)]
    columns += ["ours_share_of_limit", "ours_share_of_f32_limit"]
    columns += [f"vs_{peer}" for peer in names[1:]]
    benchlib.print_table(
        f"sampler, median of {args.rounds} rounds (new tokens/s, prefill included)", rows, columns
    )
    for row in rows:
        for peer in names[1:]:
            spread = ", ".join(f"{ratio:.2f}" for ratio in row[f"vs_{peer}_per_round"])
            print(f"batch {row['batch']}, ours / {peer} per round: {spread}")
    benchlib.write_results(
        "sampler_rounds",
        {"settings": vars(args), "skipped": skipped, "rows": rows, "rounds_dir": ROUNDS_DIR.name},
    )


if __name__ == "__main__":
    main()
