"""Run one training phase.

  python scripts/train.py --config=configs/default.py --workdir=runs/default --phase=sft
  python scripts/train.py --config=configs/default.py:tiny --workdir=/tmp/tiny --phase=reward

Any config field can be overridden, for example `--config.sft.steps=100`.

Exit status: 0 when the phase finished, 1 for an invalid config or a missing or unreadable
input (the message names the field or file), and 75 (EX_TEMPFAIL) when SIGTERM stopped the run
after it saved a checkpoint; rerunning the same command resumes from that checkpoint.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from trait_rl import cli
from trait_rl.parallel import multihost
from trait_rl.training import checkpoints, phase

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory of the run; each phase writes WORKDIR/<phase>/."
)
_PHASE = flags.DEFINE_enum("phase", None, list(checkpoints.PHASES), "Phase to run.")
flags.mark_flags_as_required(["config", "workdir", "phase"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.check_workdir(_WORKDIR.value)
    multihost.maybe_initialize(_CONFIG.value)
    config_arg = config_flags.get_config_filename(flags.FLAGS["config"])
    logging.info("running phase %s in %s", _PHASE.value, _WORKDIR.value)
    # Preempted (a SystemExit with status 75) passes through cli.run unchanged.
    phase.run_phase(_CONFIG.value, _WORKDIR.value, _PHASE.value, config_arg=config_arg)


if __name__ == "__main__":
    cli.run(main)
