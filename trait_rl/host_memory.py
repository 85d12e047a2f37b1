"""An opt-in allocator setting that keeps freed host memory for XLA's next call to reuse.

XLA:CPU (jax 0.10.2) allocates each call's temporary buffer through glibc's malloc, which maps
a large block fresh from the OS and unmaps it on free. Every call then faults the pages of its
buffer in again. At the benchmarks' reference shape on a 2-core CPU, a sampler call at batch 64
has a 76 MiB buffer, and strace showed one mmap and one munmap of it per call. Each call took
19,500 page faults and 35-45 ms of system time, and 7 ms of system time with the settings
below (benchmarks/RESULTS.md has the wall times). Disabling mmap alone did not remove the
faults: a worker thread requested the buffer from its own arena, so one arena is needed too.
NOTE: the setting removes most of the faults, not all. In ten processes that each called a
function with a 64 MiB temporary buffer five times, 7 of the 50 calls still faulted the whole
buffer in, with one arena and no large mmap in use (glibc's malloc_info); the cause was not found.

`retain_freed_memory` sets three glibc malloc options: one arena for all threads, no mmap for
large blocks, and a trim threshold of 1 GiB. Large blocks then come from one heap that keeps
freed memory for the next call. It is off by default, because on a 2-core CPU it raised the
default pipeline's peak RSS from 1.37 to 2.31 GB. The pipeline's wall time and the benchmarks'
step times moved by less than their run-to-run spread. The command-line scripts apply it when
TRAIT_RL_RETAIN_HOST_MEMORY=1, and library users can call `retain_freed_memory` before their
first JAX computation.
"""

import ctypes
import os
import sys

ENV_VAR = "TRAIT_RL_RETAIN_HOST_MEMORY"

# mallopt parameters from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_TRIM_THRESHOLD_BYTES = 1 << 30


def enabled_by_env() -> bool:
    """Return the setting of TRAIT_RL_RETAIN_HOST_MEMORY: "0" (the default) or "1"."""
    value = os.environ.get(ENV_VAR, "0").strip()
    if value not in ("0", "1"):
        raise ValueError(
            f"invalid {ENV_VAR}={value!r}: use 1 to keep freed host memory for reuse or 0 (the "
            "default) to leave the C allocator's settings unchanged"
        )
    return value == "1"


def apply_env_setting() -> bool:
    """Call `retain_freed_memory` if TRAIT_RL_RETAIN_HOST_MEMORY=1. Return whether it was set."""
    return enabled_by_env() and retain_freed_memory()


def retain_freed_memory() -> bool:
    """Set glibc's malloc options so that freed large blocks stay mapped for reuse.

    Returns whether the options were set. It returns False and changes nothing where the C
    library is not glibc (macOS, musl). Call it before the first JAX computation: a thread that
    already has its own malloc arena keeps it.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    options = (
        (_M_ARENA_MAX, 1),
        (_M_MMAP_MAX, 0),
        (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES),
    )
    # mallopt returns 1 on success and 0 on error.
    results = [mallopt(option, value) for option, value in options]
    return all(result == 1 for result in results)
