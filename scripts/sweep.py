"""Run a sweep of pipeline runs, or print one command per run, then aggregate across seeds.

  python scripts/sweep.py --config=configs/default.py --sweep=configs/sweeps/seeds_x_arms.py \
      --workdir=runs/seeds_x_arms
  python scripts/sweep.py ... --print_commands    # one scheduler command per run, runs nothing
  python scripts/sweep.py ... --only_aggregate    # after the cluster runs finished

Runs go to WORKDIR/<run name>/, which is WORKDIR/<group>_seed<N> in the sweeps built with
`trait_rl.sweep.grid`; the aggregate goes to WORKDIR/sweep.md, sweep.json and plots/.
`--config.*` overrides apply to every run; the sweep's own overrides win where both set a field.
Every run's config is validated before the first run starts.
"""

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from trait_rl import cli, pipeline, sweep
from trait_rl.parallel import multihost

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to the base config file.")
_SWEEP = flags.DEFINE_string("sweep", None, "Path to a sweep file defining get_sweep().")
_WORKDIR = flags.DEFINE_string(
    "workdir",
    None,
    "Directory of the sweep: each run goes to WORKDIR/<run name> (WORKDIR/<group>_seed<N> in "
    "grid sweeps), and sweep.md, sweep.json and plots/ go to WORKDIR.",
)
_PRINT_COMMANDS = flags.DEFINE_bool(
    "print_commands", False, "Print one run_pipeline.py command per run and exit without running."
)
_ONLY_AGGREGATE = flags.DEFINE_bool(
    "only_aggregate", False, "Skip the runs; aggregate the metrics.json files already written."
)
_PYTHON = flags.DEFINE_string("python", "python", "Interpreter named in printed commands.")
flags.mark_flags_as_required(["config", "sweep", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.check_workdir(_WORKDIR.value)
    config = _CONFIG.value
    multihost.maybe_initialize(config)
    config_arg = config_flags.get_config_filename(flags.FLAGS["config"])
    runs = sweep.load_sweep(_SWEEP.value)
    configs = sweep.run_configs(config, runs, _SWEEP.value, jax.device_count())

    if _PRINT_COMMANDS.value:
        base_overrides = config_flags.get_override_values(flags.FLAGS["config"])
        for run in runs:
            print(sweep.run_command(config_arg, run, _WORKDIR.value, base_overrides, _PYTHON.value))
        return

    if not _ONLY_AGGREGATE.value:
        sweep.run_sweep(runs, configs, _WORKDIR.value, config_arg, pipeline.run_pipeline)
    groups = sweep.aggregate_sweep(runs, _WORKDIR.value, config.eval.bootstrap_samples, config.seed)
    if jax.process_index() == 0:
        path = sweep.write_sweep_report(_WORKDIR.value, _SWEEP.value, groups)
        logging.info("sweep report written to %s", path)
        print(f"sweep report: {path}")


if __name__ == "__main__":
    cli.run(main)
