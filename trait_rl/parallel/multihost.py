"""Multi-host set-up: start `jax.distributed` when the config or the environment requests it.

Call `maybe_initialize(config)` first thing in every entry point, before any JAX computation.
After it, `jax.devices()` lists the devices of all processes, so `make_mesh` spans every host.
Each process then feeds only its own slice of the global batch: `batching.batch_iterator(...,
process_index=jax.process_index(), process_count=jax.process_count())` yields that slice, and
`sharding.shard_batch` assembles the global array with `jax.make_array_from_process_local_data`.

Environment variables, for launchers that do not set up a cluster JAX detects by itself (Cloud
TPU, Slurm and Open MPI are detected by `jax.distributed.initialize` with no arguments):
  JAX_COORDINATOR_ADDRESS  host:port of process 0's coordinator service
  JAX_NUM_PROCESSES        number of processes
  JAX_PROCESS_ID           this process's index, 0 .. JAX_NUM_PROCESSES - 1
"""

import dataclasses
import logging
import os
from collections.abc import Mapping

import jax

COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"
NUM_PROCESSES_ENV = "JAX_NUM_PROCESSES"
PROCESS_ID_ENV = "JAX_PROCESS_ID"
DISTRIBUTED_ENV = (COORDINATOR_ENV, NUM_PROCESSES_ENV, PROCESS_ID_ENV)


@dataclasses.dataclass(frozen=True)
class DistributedSettings:
    """Arguments of `jax.distributed.initialize`. None lets JAX detect the value."""

    coordinator_address: str | None
    num_processes: int | None
    process_id: int | None


def _int_env(environ: Mapping[str, str], name: str) -> int | None:
    text = environ.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(
            f"invalid environment variable {name}={text!r}: expected an integer"
        ) from None


def distributed_settings(
    multihost: bool, environ: Mapping[str, str] = os.environ
) -> DistributedSettings | None:
    """Decide whether to start `jax.distributed`, and with which arguments.

    Returns None (single process) unless `multihost` is true or one of JAX_COORDINATOR_ADDRESS,
    JAX_NUM_PROCESSES or JAX_PROCESS_ID is set.
    """
    if not multihost and not any(environ.get(name) for name in DISTRIBUTED_ENV):
        return None
    settings = DistributedSettings(
        coordinator_address=environ.get(COORDINATOR_ENV) or None,
        num_processes=_int_env(environ, NUM_PROCESSES_ENV),
        process_id=_int_env(environ, PROCESS_ID_ENV),
    )
    if settings.num_processes is not None and settings.num_processes < 1:
        raise ValueError(f"invalid {NUM_PROCESSES_ENV}={settings.num_processes}: expected >= 1")
    process_id, count = settings.process_id, settings.num_processes
    if process_id is not None and count is not None and not 0 <= process_id < count:
        raise ValueError(
            f"invalid {PROCESS_ID_ENV}={process_id}: expected 0 <= id < {NUM_PROCESSES_ENV}={count}"
        )
    return settings


def maybe_initialize(config) -> bool:
    """Start `jax.distributed` when `config.multihost` or the environment requests it.

    Returns whether the program runs multi-process.

    A second call (a sweep calling the pipeline, a notebook cell run twice) does nothing.
    """
    settings = distributed_settings(bool(config.get("multihost", False)))
    if settings is None:
        return False
    if not jax.distributed.is_initialized():
        jax.distributed.initialize(
            coordinator_address=settings.coordinator_address,
            num_processes=settings.num_processes,
            process_id=settings.process_id,
        )
        logging.info(
            "jax.distributed initialized: process %d of %d, %d local and %d global devices",
            jax.process_index(),
            jax.process_count(),
            jax.local_device_count(),
            jax.device_count(),
        )
    return True


def process_batch_size(global_batch_size: int, process_count: int | None = None) -> int:
    """Return the rows each process feeds per step: the global batch split evenly over hosts."""
    process_count = jax.process_count() if process_count is None else process_count
    if global_batch_size % process_count:
        raise ValueError(
            f"global batch size {global_batch_size} is not divisible by {process_count} "
            "processes; choose a batch size that is a multiple of the process count"
        )
    return global_batch_size // process_count
