"""SIGTERM handling for the train loops: save at the next step boundary, then exit with status 75.

Preemptible machines (spot VMs, preemptible TPUs, Kubernetes pods) get SIGTERM some seconds
before SIGKILL. The handler only sets a flag. The train loops check it after each step, save a
checkpoint of the finished step, wait for the save and raise `Preempted`. Rerunning the same
command resumes from that checkpoint.

Orbax's PreemptionCheckpointingPolicy only covers the preemption notice that JAX syncs across the
hosts of a multi-host job, so a plain SIGTERM to a single-host run needs this flag.
"""

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

from trait_rl.training import checkpoints

# EX_TEMPFAIL of sysexits.h ("temporary failure, retry later"): schedulers and wrapper scripts
# can rerun the same command when a phase exits with this status.
PREEMPTED_EXIT_CODE = 75

_requested = threading.Event()


class Preempted(SystemExit):
    """Raised after the checkpoint of `step` was saved because SIGTERM arrived.

    It derives from SystemExit with code PREEMPTED_EXIT_CODE, so a command-line script exits
    with that status without a traceback and without handling it itself.
    """

    def __init__(self, step: int, directory: str):
        super().__init__(PREEMPTED_EXIT_CODE)
        self.step = step
        self.directory = directory

    def __str__(self) -> str:
        return (
            f"preempted: saved the checkpoint of step {self.step} in {self.directory}; "
            "rerun the same command to resume from it"
        )


def request() -> None:
    """Ask the running train loop to save and stop at its next step boundary."""
    _requested.set()


def requested() -> bool:
    """Return whether SIGTERM (or `request()`) arrived and the loop has not stopped yet."""
    return _requested.is_set()


def clear() -> None:
    """Forget an earlier request, for example before a new phase starts in the same process."""
    _requested.clear()


def _handle_signal(signum, frame) -> None:
    del frame
    logging.warning(
        "received %s: saving a checkpoint at the next step boundary, then exiting with status %d",
        signal.Signals(signum).name,
        PREEMPTED_EXIT_CODE,
    )
    request()


@contextlib.contextmanager
def watch_sigterm() -> Iterator[None]:
    """Turn SIGTERM into a preemption request while the block runs; restore the old handler.

    Python lets only the main thread install signal handlers, so in any other thread this does
    nothing and SIGTERM keeps its previous behaviour.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _handle_signal)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def save_and_stop(manager, directory, state) -> None:
    """Save `state` (unless its step is already on disk), wait for the write, raise Preempted.

    `manager` is the phase's Orbax CheckpointManager and `directory` the phase directory named in
    the message. The request is cleared first, so a caller that handles Preempted and trains on
    in the same process does not stop again at once.
    """
    clear()
    step = int(state.step)
    if manager.latest_step() != step:
        checkpoints.save(manager, state, force=True)
    manager.wait_until_finished()
    logging.warning("saved the checkpoint of step %d after SIGTERM; exiting", step)
    raise Preempted(step, str(directory))
