"""Two processes on loopback, 4 CPU devices each, train like one process with 8 devices.

Run as a script (`python tests/test_multihost.py OUT.npz`), this file is the worker of one
process: the environment names the coordinator, the process count and the process id.
"""

import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
from jax.experimental import multihost_utils

from configs import default
from trait_rl.model import transformer
from trait_rl.model.config import ModelConfig
from trait_rl.parallel import mesh as mesh_lib
from trait_rl.parallel import multihost
from trait_rl.training import sft, train_state

REPO = pathlib.Path(__file__).resolve().parents[1]
VOCAB_SIZE = 64
SEQ_LEN = 16
GLOBAL_BATCH = 8
NUM_STEPS = 3
NUM_ROWS = 32


def _sft_arrays() -> dict[str, np.ndarray]:
    """Random token rows, the same on every process; the loss is on the second half."""
    rng = np.random.default_rng(7)
    tokens = rng.integers(1, VOCAB_SIZE, size=(NUM_ROWS, SEQ_LEN)).astype(np.int32)
    input_mask = np.ones_like(tokens)
    loss_mask = np.zeros_like(tokens)
    loss_mask[:, SEQ_LEN // 2 :] = 1
    return {"tokens": tokens, "input_mask": input_mask, "loss_mask": loss_mask}


def run_sft_steps() -> tuple[np.ndarray, list[np.ndarray]]:
    """Train NUM_STEPS sharded SFT steps over all global devices; return losses and params.

    The mesh is data=2 x fsdp=2 x tensor=2, so with two processes the weights are sharded across
    hosts too. Params come back gathered to full numpy arrays on every process.
    """
    config = default.get_config("tiny")
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2
    model_cfg = ModelConfig.from_config(config.model, VOCAB_SIZE)
    mesh = mesh_lib.make_mesh(config.mesh)
    tx = optax.adamw(1e-2)
    state, shardings = train_state.init_train_state(
        lambda key: transformer.init_params(key, model_cfg),
        0,
        tx,
        mesh,
        sft.policy_shardings(config, model_cfg, mesh),
    )
    step_fn = sft.make_sft_step(model_cfg, tx, mesh, shardings)
    batches = sft.sft_batches(_sft_arrays(), GLOBAL_BATCH, seed=0, start_step=0, mesh=mesh)
    losses = []
    for _ in range(NUM_STEPS):
        state, metrics = step_fn(state, next(batches))
        losses.append(float(metrics["loss"]))
    params = multihost_utils.process_allgather(state.params, tiled=True)
    return np.array(losses), [np.asarray(leaf) for leaf in jax.tree.leaves(params)]


def _worker(output_path: str) -> None:
    config = default.get_config("tiny")
    assert multihost.maybe_initialize(config), "the environment should start jax.distributed"
    assert jax.process_count() == 2
    assert jax.local_device_count() == 4
    assert jax.device_count() == 8
    losses, leaves = run_sft_steps()
    np.savez(output_path, *leaves, losses=losses)
    jax.distributed.shutdown()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker_env(port: int, process_id: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "_proxy" not in k.lower()}
    env.update(
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
        JAX_PLATFORMS="cpu",
        JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
        JAX_NUM_PROCESSES="2",
        JAX_PROCESS_ID=str(process_id),
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
    )
    return env


def _load(path: pathlib.Path) -> tuple[np.ndarray, list[np.ndarray]]:
    with np.load(path) as data:
        leaves = [data[f"arr_{i}"] for i in range(len(data.files) - 1)]
        return data["losses"], leaves


def test_two_processes_match_one(tmp_path):
    port = _free_port()
    outputs = [tmp_path / f"process{i}.npz" for i in range(2)]
    workers = [
        subprocess.Popen(
            [sys.executable, __file__, str(outputs[i])],
            env=_worker_env(port, i),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    logs = []
    for worker in workers:
        try:
            logs.append(worker.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for other in workers:
                other.kill()
            pytest.fail("a multi-host worker timed out after 300 s")
    for i, worker in enumerate(workers):
        assert worker.returncode == 0, f"process {i} failed:\n{logs[i][-4000:]}"

    expected_losses, expected_leaves = run_sft_steps()
    assert np.all(np.diff(expected_losses) < 0), expected_losses
    for i, output in enumerate(outputs):
        losses, leaves = _load(output)
        np.testing.assert_allclose(losses, expected_losses, rtol=1e-5, err_msg=f"process {i}")
        assert len(leaves) == len(expected_leaves)
        for leaf, expected in zip(leaves, expected_leaves, strict=True):
            np.testing.assert_allclose(leaf, expected, rtol=1e-4, atol=1e-5)


def test_settings_off_without_request():
    assert multihost.distributed_settings(False, {}) is None


def test_settings_from_config_flag():
    settings = multihost.distributed_settings(True, {})
    assert settings == multihost.DistributedSettings(None, None, None)


def test_settings_from_environment():
    environ = {
        "JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234",
        "JAX_NUM_PROCESSES": "4",
        "JAX_PROCESS_ID": "3",
    }
    settings = multihost.distributed_settings(False, environ)
    assert settings == multihost.DistributedSettings("10.0.0.1:1234", 4, 3)


def test_settings_reject_bad_process_id():
    environ = {"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"}
    with pytest.raises(ValueError, match="JAX_PROCESS_ID=2"):
        multihost.distributed_settings(False, environ)


def test_settings_reject_non_integer():
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES='two'"):
        multihost.distributed_settings(False, {"JAX_NUM_PROCESSES": "two"})


def test_single_process_not_initialized():
    assert multihost.maybe_initialize(default.get_config("tiny")) is False
    assert jax.process_count() == 1


def test_process_batch_size():
    assert multihost.process_batch_size(16, process_count=4) == 4
    with pytest.raises(ValueError, match="not divisible by 3 processes"):
        multihost.process_batch_size(16, process_count=3)


if __name__ == "__main__":
    _worker(sys.argv[1])
