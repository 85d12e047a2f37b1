"""Run the whole pipeline: data, SFT, reward model, baseline, RL arms, evaluation, report.

  python scripts/run_pipeline.py --config=configs/default.py --workdir=runs/default
  python scripts/run_pipeline.py --config=configs/default.py:tiny --workdir=/tmp/tiny

Any config field can be overridden, for example `--config.rl.steps=20`. Phases whose final
checkpoint exists are restored instead of retrained.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from trait_rl import cli, pipeline
from trait_rl.parallel import multihost

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the run (created when missing).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.check_workdir(_WORKDIR.value)
    multihost.maybe_initialize(_CONFIG.value)
    config_arg = config_flags.get_config_filename(flags.FLAGS["config"])
    report_path = pipeline.run_pipeline(_CONFIG.value, _WORKDIR.value, config_arg)
    logging.info("report written to %s", report_path)
    print(f"report: {report_path}")


if __name__ == "__main__":
    cli.run(main)
