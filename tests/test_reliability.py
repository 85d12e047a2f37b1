"""Reliability in process: SIGTERM preemption, corrupt checkpoints, NaN stops, bad config and input.

The slow subprocess tests (SIGKILL and SIGTERM of scripts/train.py) are in
test_reliability_resume.py.
"""

import logging
import math
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from configs import default
from trait_rl import configuration
from trait_rl.data import io_utils
from trait_rl.eval import report
from trait_rl.training import checkpoints, loop, optimizer, phase, preemption, train_state

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_STEPS = 8


def _mesh():
    return Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("data", "fsdp"))


def _init_params(key):
    k1, k2 = jax.random.split(key)
    return {"embed": jax.random.normal(k1, (16, 8)), "kernel": jax.random.normal(k2, (8, 4))}


def _loss(params, batch):
    prediction = batch @ params["embed"] @ params["kernel"]
    loss = jnp.mean((prediction - 1.0) ** 2)
    return loss, {"loss": loss}


def _grad_nan_loss(params, batch):
    # sqrt'(0) is inf and 0 * inf is NaN, so a zero batch gives a finite loss but NaN gradients.
    loss, metrics = _loss(params, batch)
    poison = 0.0 * jnp.sum(jnp.sqrt(params["kernel"] * 0.0 + jnp.min(jnp.abs(batch))))
    return loss + poison, metrics


def _train_config(checkpoint_every=2, max_to_keep=2):
    config = default.get_config("tiny").sft
    config.steps = NUM_STEPS
    config.warmup_steps = 1
    config.log_every = 1
    config.checkpoint_every = checkpoint_every
    config.max_to_keep = max_to_keep
    return config


def _batch(index):
    return jnp.full((4, 16), 1.0 + 0.1 * index) / 16


def _fit(directory, train_config, *, loss_fn=_loss, on_batch=None, batch_fn=_batch):
    """Run loop.fit on the toy model; `on_batch(index)` runs before batch `index` is yielded."""
    mesh = _mesh()
    shardings = {"embed": NamedSharding(mesh, P()), "kernel": NamedSharding(mesh, P())}
    tx = optimizer.make_optimizer(train_config, "sft")
    state, state_shardings = train_state.init_train_state(_init_params, 0, tx, mesh, shardings)
    step_fn = train_state.make_train_step(loss_fn, tx, state_shardings, NamedSharding(mesh, P()))

    def batches(start):
        for index in range(start, train_config.steps):
            if on_batch is not None:
                on_batch(index)
            yield batch_fn(index)

    return loop.fit(
        state, step_fn, batches, train_config=train_config, prefix="sft", directory=directory
    )


def _saved_steps(directory):
    manager = checkpoints.open_manager(directory)
    try:
        return sorted(manager.all_steps())
    finally:
        manager.close()


def _assert_trees_close(want, got):
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    directory = tmp_path_factory.mktemp("reference") / "sft"
    return jax.device_get(_fit(directory, _train_config()))


# Preemption


def _sigterm_at(step):
    def on_batch(index):
        if index == step:
            os.kill(os.getpid(), signal.SIGTERM)

    return on_batch


def test_sigterm_saves_exits_75_and_resumes_exactly(tmp_path, uninterrupted):
    directory = tmp_path / "sft"
    handler_before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(preemption.Preempted) as stopped:
        _fit(directory, _train_config(), on_batch=_sigterm_at(4))
    assert signal.getsignal(signal.SIGTERM) is handler_before
    assert stopped.value.code == preemption.PREEMPTED_EXIT_CODE == 75
    # The signal arrives while batch 4 is fetched; step 5 finishes, so its state is saved
    # although the save interval (2) would skip it.
    assert stopped.value.step == 5
    assert 5 in _saved_steps(directory)
    assert checkpoints.final_step(directory) is None
    assert not preemption.requested()

    resumed = jax.device_get(_fit(directory, _train_config()))
    assert int(resumed.step) == NUM_STEPS
    _assert_trees_close(uninterrupted, resumed)
    assert checkpoints.final_step(directory) == NUM_STEPS


# Corrupt checkpoints


def _truncate_files(step_dir, item):
    files = [f for f in (step_dir / item).rglob("*") if f.is_file() and f.parent.name == "d"]
    assert files, f"no data files under {step_dir / item}"
    for path in files:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CORRUPTIONS = {
    "deleted_item": lambda step_dir: shutil.rmtree(step_dir / "params"),
    "truncated_data": lambda step_dir: _truncate_files(step_dir, "train"),
    "invalid_metadata": lambda step_dir: (step_dir / "params" / "_METADATA").write_text("{"),
}


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A finished toy run keeping the checkpoints of steps 4, 6 and 8."""
    directory = tmp_path_factory.mktemp("saved") / "sft"
    _fit(directory, _train_config(max_to_keep=3))
    assert _saved_steps(directory) == [4, 6, 8]
    return directory


def _restore_from(directory):
    mesh = _mesh()
    shardings = {"embed": NamedSharding(mesh, P()), "kernel": NamedSharding(mesh, P())}
    train_config = _train_config(max_to_keep=3)
    tx = optimizer.make_optimizer(train_config, "sft")
    target, _ = train_state.init_train_state(_init_params, 1, tx, mesh, shardings)
    manager = checkpoints.open_manager(directory, train_config)
    try:
        return checkpoints.restore_latest(manager, target)
    finally:
        manager.close()


# A failed TensorStore read leaves an Orbax callback for an event loop that is already closed.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_latest_falls_back_with_warning(tmp_path, saved_run, caplog, corruption):
    directory = tmp_path / "sft"
    shutil.copytree(saved_run, directory)
    bad_step_dir = directory / "checkpoints" / "8"
    CORRUPTIONS[corruption](bad_step_dir)

    with caplog.at_level(logging.WARNING):
        restored = _restore_from(directory)

    assert int(restored.step) == 6
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert f"checkpoint {bad_step_dir} is unreadable" in warnings
    # The bad step is kept for inspection but out of the way, so step 8 can be saved again.
    assert _saved_steps(directory) == [4, 6]
    assert (directory / checkpoints.CORRUPT_DIR / "8").is_dir()


def test_run_after_fallback_resaves_the_bad_step(tmp_path, saved_run, uninterrupted):
    directory = tmp_path / "sft"
    shutil.copytree(saved_run, directory)
    (directory / checkpoints.FINAL_FILE).unlink()
    _truncate_files(directory / "checkpoints" / "8", "params")

    resumed = jax.device_get(_fit(directory, _train_config(max_to_keep=3)))

    _assert_trees_close(uninterrupted, resumed)
    assert _saved_steps(directory) == [4, 6, 8]
    assert checkpoints.final_step(directory) == NUM_STEPS


def test_no_readable_checkpoint_names_directory(tmp_path, saved_run):
    directory = tmp_path / "sft"
    shutil.copytree(saved_run, directory)
    for step in (4, 6, 8):
        shutil.rmtree(directory / "checkpoints" / str(step) / "train")

    with pytest.raises(checkpoints.CorruptCheckpointError) as error:
        _restore_from(directory)
    message = str(error.value)
    assert f"no readable checkpoint in {directory / 'checkpoints'}" in message
    assert "[8, 6, 4]" in message


def test_corrupt_final_checkpoint_names_step_directory(tmp_path, saved_run):
    directory = tmp_path / "sft"
    shutil.copytree(saved_run, directory)
    shutil.rmtree(directory / "checkpoints" / "8" / "params")
    shapes = jax.eval_shape(_init_params, jax.random.key(0))
    mesh = _mesh()
    target = checkpoints.abstract_target(
        shapes, jax.tree.map(lambda _: NamedSharding(mesh, P()), shapes)
    )

    with pytest.raises(
        checkpoints.CorruptCheckpointError, match=re.escape(str(directory / "checkpoints" / "8"))
    ):
        checkpoints.restore_final_params(directory, target)


# NaN and Inf


def _nan_batch_at(step):
    def batch_fn(index):
        batch = _batch(index)
        return batch * jnp.nan if index == step else batch

    return batch_fn


def test_nan_loss_stops_and_keeps_finite_checkpoints(tmp_path):
    directory = tmp_path / "sft"
    # Batch 4 is NaN, so the update of step 5 makes NaN params. With a save every step and
    # metrics read one step late, step 5 would be saved before its loss was checked.
    with pytest.raises(FloatingPointError, match="loss is nan at step 5"):
        _fit(directory, _train_config(checkpoint_every=1), batch_fn=_nan_batch_at(4))

    assert _saved_steps(directory) == [3, 4]
    assert checkpoints.final_step(directory) is None
    restored = _restore_from(directory)
    assert int(restored.step) == 4
    for leaf in jax.tree.leaves(restored.params):
        assert np.all(np.isfinite(np.asarray(leaf)))


def test_nan_gradient_with_finite_loss_stops(tmp_path):
    directory = tmp_path / "sft"

    def zero_at_3(index):
        return jnp.zeros((4, 16)) if index == 3 else _batch(index)

    with pytest.raises(FloatingPointError, match="grad_norm is nan at step 4"):
        _fit(directory, _train_config(), loss_fn=_grad_nan_loss, batch_fn=zero_at_3)
    assert _saved_steps(directory) == [2]


def test_save_refuses_non_finite_state(tmp_path):
    mesh = _mesh()
    shardings = {"embed": NamedSharding(mesh, P()), "kernel": NamedSharding(mesh, P())}
    train_config = _train_config()
    tx = optimizer.make_optimizer(train_config, "sft")
    state, _ = train_state.init_train_state(_init_params, 0, tx, mesh, shardings)
    params = {**state.params, "kernel": state.params["kernel"].at[0, 0].set(jnp.inf)}
    state = train_state.TrainState(
        step=state.step + 2, params=params, opt_state=state.opt_state, rng=state.rng
    )
    manager = checkpoints.open_manager(tmp_path / "sft", train_config)
    try:
        with pytest.raises(
            FloatingPointError, match=r"step 2 not saved because \['params'\]\['kernel'\]"
        ):
            checkpoints.save(manager, state, force=True)
        manager.wait_until_finished()
        assert manager.all_steps() == []
    finally:
        manager.close()


# Configuration


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("sft.learning_rate", -0.001, "sft.learning_rate=-0.001"),
        ("rl.learning_rate", -1.0, "rl.learning_rate=-1.0"),
        # 6 is not a multiple of the 8 data-parallel devices.
        ("reward.batch_size", 6, "reward.batch_size=6"),
        ("rl.group_size", 0, "rl.group_size=0"),
        ("arm", "single_trait:kindness", "arm='single_trait:kindness'"),
        ("arm", "best_arm", "arm='best_arm'"),
        # 16 devices requested, 8 present: the message shows every axis size.
        ("mesh.data", 16, "mesh={'data': 16, 'fsdp': 1, 'tensor': 1}"),
        ("rl.lagrangian_trait", "kindness", "rl.lagrangian_trait='kindness'"),
        ("model.matmul_dtype", "fp8", "model.matmul_dtype='fp8'"),
        pytest.param("sft.learning_rate", math.nan, "sft.learning_rate=nan"),
        # Sampling divides the logits by the temperature.
        pytest.param("rl.temperature", 0.0, "rl.temperature=0.0"),
        # top_p = 0 keeps no token to sample.
        pytest.param("rl.top_p", 0.0, "rl.top_p=0.0"),
        # 8 tensor-parallel devices cannot split the tiny model's 4 heads.
        pytest.param("mesh.tensor", 8, "mesh.tensor=8"),
    ],
)
def test_invalid_config_names_field_and_value(field, value, expected):
    config = default.get_config("tiny")
    section, _, name = field.rpartition(".")
    if field == "mesh.tensor":
        config.mesh.data = 1
    (config[section] if section else config)[name] = value

    with pytest.raises(configuration.ConfigError) as error:
        configuration.validate(config, device_count=8)
    assert expected in str(error.value)


def test_unknown_trait_weight_names_trait():
    config = default.get_config("tiny")
    config.rl.trait_weights.kindness = 1.0
    with pytest.raises(configuration.ConfigError, match=r"rl\.trait_weights\.kindness=1\.0"):
        configuration.validate(config, device_count=8)


def test_run_phase_validates_before_writing(tmp_path):
    config = default.get_config("tiny")
    config.rl.group_size = 0
    with pytest.raises(configuration.ConfigError, match="rl.group_size=0"):
        phase.run_phase(config, tmp_path, "sft")
    assert list(tmp_path.iterdir()) == []


def _run_script(*args, cwd):
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_train_cli_rejects_bad_config_without_traceback(tmp_path):
    result = _run_script(
        str(REPO / "scripts" / "train.py"),
        "--config=configs/default.py:tiny",
        f"--workdir={tmp_path / 'run'}",
        "--phase=sft",
        "--config.rl.group_size=0",
        cwd=REPO,
    )
    assert result.returncode == 1
    assert "invalid config value rl.group_size=0" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


# Input files


def test_evaluate_cli_names_file_line_without_traceback(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_bytes(b'{"prompt": "What is 2+2?"}\n{"prompt": 3}\n')
    output = tmp_path / "out"
    result = _run_script(
        str(REPO / "scripts" / "evaluate.py"),
        f"--checkpoint={tmp_path / 'missing_rl'}",
        f"--prompts={prompts}",
        f"--output={output}",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert f"{prompts}:2: field 'prompt' must be a string" in result.stderr
    assert "Traceback" not in result.stderr
    assert not output.exists()


# Atomic writes


def test_checkpoint_temporary_directory_is_not_a_step(tmp_path, saved_run):
    directory = tmp_path / "sft"
    shutil.copytree(saved_run, directory)
    # What an Orbax save killed mid-write leaves: a step directory under a temporary name.
    partial = directory / "checkpoints" / "10.orbax-checkpoint-tmp-1234567"
    shutil.copytree(directory / "checkpoints" / "8", partial)
    shutil.rmtree(partial / "train")

    assert _saved_steps(directory) == [4, 6, 8]
    assert int(_restore_from(directory).step) == 8


def _fail_fsync(fd):
    raise OSError(28, "No space left on device")


def test_report_failure_mid_write_keeps_old_files(tmp_path, monkeypatch):
    (tmp_path / "metrics.json").write_text('{"old": 1}\n')
    monkeypatch.setattr(io_utils.os, "fsync", _fail_fsync)

    with pytest.raises(OSError, match="No space left"):
        report.write_report(tmp_path, {"config": {}})
    assert (tmp_path / "metrics.json").read_text() == '{"old": 1}\n'
    assert not (tmp_path / "report.md").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_final_marker_failure_mid_write_leaves_none(tmp_path, monkeypatch):
    monkeypatch.setattr(io_utils.os, "fsync", _fail_fsync)
    with pytest.raises(OSError, match="No space left"):
        checkpoints.save_phase_files(tmp_path / "sft", default.get_config("tiny"))
    assert list((tmp_path / "sft").iterdir()) == []


# No pickle


PICKLE_PATTERNS = (
    re.compile(r"^\s*(import|from) (pickle|cPickle|dill|cloudpickle|joblib)\b"),
    re.compile(r"\bpickle\.(load|loads|Unpickler)\b"),
    re.compile(r"\btorch\.load\("),
    re.compile(r"allow_pickle\s*=\s*True"),
    re.compile(r"\bread_pickle\("),
)


def test_package_never_unpickles():
    sources = [*REPO.joinpath("trait_rl").rglob("*.py"), *REPO.joinpath("scripts").rglob("*.py")]
    assert len(sources) > 20
    offenders = []
    for path in sources:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if any(pattern.search(line) for pattern in PICKLE_PATTERNS):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []
