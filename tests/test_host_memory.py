"""The host allocator setting: its environment switch, and the page faults it saves."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from trait_rl import cli, host_memory

REPO = pathlib.Path(__file__).resolve().parents[1]

# Calls a jitted function whose 64 MiB intermediate lands in XLA's temporary buffer, then prints
# the count of minor page faults of each call.
_FAULT_PROBE = """
import json, resource
from trait_rl import host_memory
retained = host_memory.apply_env_setting()
import jax, jax.numpy as jnp

@jax.jit
def f(a, b, c):
    return jnp.sin(a @ b) @ c

a = jnp.ones((4096, 64)); b = jnp.ones((64, 4096)); c = jnp.ones((4096, 1))
f(a, b, c).block_until_ready()
faults = []
for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(a, b, c).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"retained": retained, "faults": faults}))
"""


def _probe_faults(setting: str) -> dict:
    env = {**os.environ, host_memory.ENV_VAR: setting, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    result = subprocess.run(
        [sys.executable, "-c", _FAULT_PROBE],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _transparent_huge_pages_always() -> bool:
    path = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return path.exists() and "[always]" in path.read_text()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc options")
@pytest.mark.skipif(
    _transparent_huge_pages_always(),
    reason="with transparent huge pages always on, a fresh 64 MiB mapping faults in 2 MiB pages",
)
def test_retained_memory_avoids_page_faults():
    retained = _probe_faults("1")
    default = _probe_faults("0")
    assert retained["retained"] is True
    assert default["retained"] is False
    # A 64 MiB buffer is 16,384 pages of 4 KiB. Mapped fresh, each call faults them all in.
    assert min(default["faults"]) > 10_000
    # NOTE: with the setting, 7 of 50 calls in ten processes still faulted the whole buffer in
    # (cause not found), so the check is that calls can reuse it, not that all of them do.
    assert min(retained["faults"]) < 1_000


def test_setting_off_by_default(monkeypatch):
    monkeypatch.delenv(host_memory.ENV_VAR, raising=False)
    assert host_memory.enabled_by_env() is False
    assert host_memory.apply_env_setting() is False


def test_env_zero_changes_nothing(monkeypatch):
    monkeypatch.setenv(host_memory.ENV_VAR, "0")
    assert host_memory.apply_env_setting() is False


def test_invalid_env_value_raises(monkeypatch):
    monkeypatch.setenv(host_memory.ENV_VAR, "yes")
    with pytest.raises(ValueError, match="invalid TRAIT_RL_RETAIN_HOST_MEMORY='yes'"):
        host_memory.enabled_by_env()


def test_cli_reports_invalid_env_value(monkeypatch):
    monkeypatch.setenv(host_memory.ENV_VAR, "on")
    with pytest.raises(SystemExit) as exit_info:
        cli.run(lambda argv: None)
    assert exit_info.value.code.startswith("error: invalid TRAIT_RL_RETAIN_HOST_MEMORY='on'")
