"""The supervised training loop shared by SFT and the reward model, with resume and checkpoints."""

import math
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import tqdm

from trait_rl.data import batching
from trait_rl.parallel import sharding
from trait_rl.training import checkpoints, preemption
from trait_rl.training.train_state import TrainState

# Metrics checked for NaN or Inf after every step when the step function returns them.
FINITE_METRICS = ("loss", "grad_norm")


def _check_finite(prefix: str, step: int, metrics: Mapping[str, np.ndarray]) -> None:
    for name in FINITE_METRICS:
        if name not in metrics:
            continue
        value = float(metrics[name])
        if not math.isfinite(value):
            raise FloatingPointError(
                f"{prefix}: {name} is {value} at step {step} (the update from step {step - 1}); "
                "the run stopped and no checkpoint of this or a later step was written. Lower "
                "the learning rate or inspect the batch at that step."
            )


def device_batches(
    arrays: Mapping[str, np.ndarray],
    batch_size: int,
    seed: int,
    start_step: int,
    mesh,
    from_arrays: Callable[[Mapping[str, np.ndarray]], Any],
) -> Iterator[Any]:
    """Yield global device batches from `start_step` on, in the deterministic order of batching.

    Each process reads only its share of every global batch; `from_arrays` builds the batch
    dataclass (for example SFTBatch.from_arrays) from one host batch.
    """
    process_batches = batching.batch_iterator(
        arrays,
        batch_size,
        seed,
        start_step,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    for host_batch in process_batches:
        yield sharding.shard_batch(from_arrays(host_batch), mesh)


def train_loop(
    state: TrainState,
    step_fn,
    batches: Iterator[Any],
    *,
    num_steps: int,
    prefix: str,
    writer=None,
    log_every: int = 1,
    manager: ocp.CheckpointManager | None = None,
    directory: str | os.PathLike | None = None,
) -> TrainState:
    """Run `step_fn` from `state.step` up to `num_steps`, logging `<prefix>/<metric>`.

    `batches` must start at the batch for `state.step` (resumed phases pass the restored step to
    their batch iterator). Metrics of each step are read one step late, so the next step is queued
    before the host waits. A NaN or Inf loss or gradient norm stops the run with
    FloatingPointError naming the step.

    With a checkpoint `manager` (and its phase `directory`), a step the save policy selects is
    saved only after that step's own metrics passed the check. A preemption request (SIGTERM
    inside `preemption.watch_sigterm`) saves the finished step and raises `preemption.Preempted`.
    """
    start = int(state.step)
    pending = None
    progress = tqdm.tqdm(
        range(start, num_steps), initial=start, total=num_steps, desc=prefix, leave=False
    )

    def report(step: int, metrics) -> None:
        host = jax.device_get(metrics)
        _check_finite(prefix, step, host)
        progress.set_postfix(loss=f"{float(host['loss']):.4f}", refresh=False)
        if writer is not None and (step % log_every == 0 or step == num_steps):
            writer.write_scalars(step, {f"{prefix}/{name}": v for name, v in host.items()})

    try:
        for step in progress:
            state, metrics = step_fn(state, next(batches))
            if pending is not None:
                report(*pending)
            pending = (step + 1, metrics)
            if manager is None:
                continue
            stop = preemption.requested()
            if not stop and not manager.should_save(step + 1):
                continue
            # A save first waits for this step's metrics, so NaN parameters are never written.
            report(*pending)
            pending = None
            if stop:
                preemption.save_and_stop(manager, directory, state)
            checkpoints.save(manager, state, force=True)
        if pending is not None:
            report(*pending)
    finally:
        progress.close()
    return state


def fit(
    state: TrainState,
    step_fn,
    make_batches: Callable[[int], Iterator[Any]],
    *,
    train_config: ml_collections.ConfigDict,
    prefix: str,
    directory: str | os.PathLike | None = None,
    writer=None,
    hparams: Mapping[str, Any] | None = None,
) -> TrainState:
    """Train `state` up to `train_config.steps`, resuming from and saving to `directory`.

    `make_batches(start_step)` returns the batch iterator positioned at `start_step`, so a resumed
    phase gets exactly the batches of an uninterrupted run. With a directory, the latest
    checkpoint there is restored into `state`'s shardings first, periodic checkpoints follow
    `train_config.checkpoint_every`, and a final save plus FINAL marker end the phase. A phase
    whose FINAL marker already covers `train_config.steps` is restored and returned untrained.
    `hparams` go to the writer when training starts from step 0.
    """
    if directory is None:
        if writer is not None and hparams is not None and int(state.step) == 0:
            writer.write_hparams(hparams)
        return train_loop(
            state,
            step_fn,
            make_batches(int(state.step)),
            num_steps=train_config.steps,
            prefix=prefix,
            writer=writer,
            log_every=train_config.log_every,
        )

    manager = checkpoints.open_manager(directory, train_config)
    try:
        restored = checkpoints.restore_latest(manager, state)
        if restored is not None:
            state = restored
        finished = checkpoints.final_step(directory)
        if finished is not None and int(state.step) >= train_config.steps:
            return state
        if writer is not None and hparams is not None and int(state.step) == 0:
            writer.write_hparams(hparams)
        with preemption.watch_sigterm():
            state = train_loop(
                state,
                step_fn,
                make_batches(int(state.step)),
                num_steps=train_config.steps,
                prefix=prefix,
                writer=writer,
                log_every=train_config.log_every,
                manager=manager,
                directory=directory,
            )
        checkpoints.save_final(manager, directory, state)
    finally:
        manager.close()
    return state
