"""Phase checkpoints: save on 8 devices, restore on 1 and 4, FINAL marker, missing-phase error."""

import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from configs import default
from trait_rl.training import checkpoints, loop, optimizer, train_state


def _mesh(shape):
    devices = np.array(jax.devices()[: int(np.prod(shape))]).reshape(shape)
    return Mesh(devices, ("data", "fsdp"))


def _param_specs():
    return {
        "embed": P("fsdp", None),
        "block": {"kernel": P(None, "fsdp"), "norm": {"scale": P()}},
    }


def _init_params(key):
    k1, k2 = jax.random.split(key)
    return {
        "embed": jax.random.normal(k1, (16, 8)),
        "block": {"kernel": jax.random.normal(k2, (8, 12)), "norm": {"scale": jnp.ones((8,))}},
    }


def _shardings(mesh):
    return jax.tree.map(lambda spec: NamedSharding(mesh, spec), _param_specs())


def _train_config(tmp_steps=3):
    config = default.get_config("tiny").sft
    config.steps = tmp_steps
    config.warmup_steps = 1
    config.checkpoint_every = 2
    config.max_to_keep = 2
    return config


def _loss(params, batch):
    prediction = batch @ params["embed"] @ params["block"]["kernel"]
    loss = jnp.mean((prediction * params["block"]["norm"]["scale"].sum()) ** 2)
    return loss, {"loss": loss}


def _trained_state(mesh, train_config):
    tx = optimizer.make_optimizer(train_config, "sft")
    state, shardings = train_state.init_train_state(_init_params, 0, tx, mesh, _shardings(mesh))
    batch_sharding = NamedSharding(mesh, P(("data", "fsdp")))
    step = train_state.make_train_step(_loss, tx, shardings, batch_sharding)
    batch = jax.device_put(jnp.ones((8, 16)) / 16, batch_sharding)
    for _ in range(train_config.steps):
        state, _ = step(state, batch)
    return state, tx


def _target(mesh, tx):
    _, shardings = train_state.init_train_state(_init_params, 1, tx, mesh, _shardings(mesh))
    shapes = jax.eval_shape(
        lambda: train_state.init_train_state(_init_params, 1, tx, mesh, _shardings(mesh))[0]
    )
    return checkpoints.abstract_target(shapes, shardings)


@pytest.mark.parametrize("restore_shape", [(1, 1), (2, 2)])
def test_restore_on_other_device_count(tmp_path, restore_shape):
    train_config = _train_config()
    state, tx = _trained_state(_mesh((2, 4)), train_config)
    saved = jax.device_get(state)
    manager = checkpoints.open_manager(tmp_path / "sft", train_config)
    checkpoints.save_final(manager, tmp_path / "sft", state)
    manager.close()

    restore_mesh = _mesh(restore_shape)
    target = _target(restore_mesh, tx)
    reader = checkpoints.open_manager(tmp_path / "sft")
    restored = checkpoints.restore_latest(reader, target)
    reader.close()

    assert int(restored.step) == train_config.steps
    for want, got in zip(jax.tree.leaves(saved), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(np.asarray(got), want)
    for sharding, array in zip(
        jax.tree.leaves(_shardings(restore_mesh)), jax.tree.leaves(restored.params), strict=True
    ):
        assert array.sharding == sharding
    assert restored.params["embed"].sharding.mesh.devices.size == np.prod(restore_shape)


def test_periodic_saves_keep_max_to_keep(tmp_path):
    train_config = _train_config(tmp_steps=1)
    tx = optimizer.make_optimizer(train_config, "sft")
    mesh = _mesh((1, 1))
    state, shardings = train_state.init_train_state(_init_params, 0, tx, mesh, _shardings(mesh))
    step = train_state.make_train_step(_loss, tx, shardings, NamedSharding(mesh, P()))
    manager = checkpoints.open_manager(tmp_path / "sft", train_config)
    for _ in range(7):
        state, _ = step(state, jnp.ones((8, 16)))
        checkpoints.save(manager, state)
    final_step = checkpoints.save_final(manager, tmp_path / "sft", state)
    steps = manager.all_steps()
    manager.close()

    assert final_step == 7
    # Saves at 2, 4, 6 by the interval and the forced final save at 7; the two newest stay.
    assert sorted(steps) == [6, 7]
    marker = json.loads((tmp_path / "sft" / "FINAL").read_text())
    assert marker == {"step": 7}
    assert checkpoints.require_final(tmp_path, "sft") == (tmp_path / "sft").resolve()


def test_restore_final_params_only(tmp_path):
    train_config = _train_config()
    state, _ = _trained_state(_mesh((2, 4)), train_config)
    saved = jax.device_get(state.params)
    manager = checkpoints.open_manager(tmp_path / "sft", train_config)
    checkpoints.save_final(manager, tmp_path / "sft", state)
    manager.close()

    mesh = _mesh((1, 1))
    shapes = jax.eval_shape(_init_params, jax.random.key(0))
    target = checkpoints.abstract_target(shapes, _shardings(mesh))
    params = checkpoints.restore_final_params(tmp_path / "sft", target)

    for want, got in zip(jax.tree.leaves(saved), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(np.asarray(got), want)


def test_require_final_names_directory_and_command(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        checkpoints.require_final(tmp_path, "sft", config_arg="configs/default.py")
    message = str(error.value)
    assert str(tmp_path.resolve() / "sft") in message
    assert (
        f"python scripts/train.py --config=configs/default.py --workdir={tmp_path} --phase=sft"
        in message
    )


def test_require_final_without_marker(tmp_path):
    (tmp_path / "reward" / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="has no FINAL marker"):
        checkpoints.require_final(tmp_path, "reward")


def test_save_phase_files(tmp_path):
    tokenizer_file = tmp_path / "tokenizer.model"
    tokenizer_file.write_bytes(b"\x00\x01model")
    config = default.get_config("tiny")
    directory = checkpoints.save_phase_files(tmp_path / "sft", config, tokenizer_file)

    written = json.loads((directory / "config.json").read_text())
    assert written["model"]["embed_dim"] == config.model.embed_dim
    assert (directory / "tokenizer.model").read_bytes() == b"\x00\x01model"


def _fit_toy(directory, train_config, stop_at=None):
    mesh = _mesh((1, 1))
    tx = optimizer.make_optimizer(train_config, "sft")
    state, shardings = train_state.init_train_state(_init_params, 0, tx, mesh, _shardings(mesh))
    step = train_state.make_train_step(_loss, tx, shardings, NamedSharding(mesh, P()))

    def batches(start):
        for index in range(start, train_config.steps):
            if index == stop_at:
                raise KeyboardInterrupt(f"interrupted before step {index}")
            yield jnp.full((8, 16), 1.0 + index) / 16

    return loop.fit(
        state, step, batches, train_config=train_config, prefix="sft", directory=directory
    )


def test_resumed_phase_matches_uninterrupted(tmp_path):
    train_config = _train_config(tmp_steps=5)
    uninterrupted = jax.device_get(_fit_toy(tmp_path / "a", train_config))

    with pytest.raises(KeyboardInterrupt):
        _fit_toy(tmp_path / "b", train_config, stop_at=3)
    assert checkpoints.final_step(tmp_path / "b") is None
    resumed = jax.device_get(_fit_toy(tmp_path / "b", train_config))

    assert int(resumed.step) == 5
    for want, got in zip(jax.tree.leaves(uninterrupted), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(got, want)
    assert checkpoints.final_step(tmp_path / "b") == 5


def test_finished_phase_is_not_retrained(tmp_path):
    train_config = _train_config(tmp_steps=3)
    first = jax.device_get(_fit_toy(tmp_path / "sft", train_config))
    again = jax.device_get(_fit_toy(tmp_path / "sft", train_config, stop_at=0))
    for want, got in zip(jax.tree.leaves(first), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(got, want)


def test_adam_moments_sharded_like_params():
    mesh = _mesh((2, 4))
    tx = optimizer.make_optimizer(_train_config(), "sft")
    state, shardings = train_state.init_train_state(_init_params, 0, tx, mesh, _shardings(mesh))
    moments = [leaf for leaf in jax.tree.leaves(state.opt_state) if leaf.shape == (16, 8)]
    assert len(moments) == 2  # Adam's mu and nu of the embedding.
    for leaf in moments:
        assert leaf.sharding.spec == P("fsdp", None)
    counts = [leaf for leaf in jax.tree.leaves(state.opt_state) if leaf.ndim == 0]
    assert counts and all(leaf.sharding.spec == P() for leaf in counts)


def test_final_save_is_idempotent(tmp_path):
    train_config = _train_config()
    state, _ = _trained_state(_mesh((1, 1)), train_config)
    directory = tmp_path / "rl_trait_rl"
    manager = checkpoints.open_manager(directory, train_config)
    checkpoints.save_final(manager, directory, state)
    marker = directory / checkpoints.FINAL_FILE
    before = marker.stat()

    step = checkpoints.save_final(manager, directory, state)
    manager.close()

    after = marker.stat()
    assert step == train_config.steps
    # An atomic rewrite would replace the file, so a kept inode and mtime mean no rewrite.
    assert after.st_ino == before.st_ino
    assert after.st_mtime_ns == before.st_mtime_ns
    assert json.loads(marker.read_text()) == {"step": train_config.steps}


def _saved_toy_phase(directory):
    train_config = _train_config()
    state, tx = _trained_state(_mesh((1, 1)), train_config)
    manager = checkpoints.open_manager(directory, train_config)
    checkpoints.save_final(manager, directory, state)
    manager.close()
    return tx


def _wider_init_params(key):
    params = _init_params(key)
    params["embed"] = jnp.zeros((16, 10))
    return params


def test_shape_mismatch_is_not_called_corrupt(tmp_path):
    directory = tmp_path / "sft"
    _saved_toy_phase(directory)
    mesh = _mesh((1, 1))
    shapes = jax.eval_shape(_wider_init_params, jax.random.key(0))
    target = checkpoints.abstract_target(shapes, _shardings(mesh))

    with pytest.raises(checkpoints.CheckpointMismatchError) as error:
        checkpoints.restore_final_params(directory, target)

    message = str(error.value)
    assert "is intact" in message
    assert "embed has shape (16, 8) there and (16, 10) in this run" in message
    assert str(directory.resolve() / "config.json") in message
    assert "unreadable" not in message
    assert "delete" not in message.lower()


def test_restore_latest_mismatch_keeps_steps(tmp_path):
    directory = tmp_path / "sft"
    tx = _saved_toy_phase(directory)
    mesh = _mesh((1, 1))
    _, shardings = train_state.init_train_state(_wider_init_params, 1, tx, mesh, _shardings(mesh))
    shapes = jax.eval_shape(
        lambda: train_state.init_train_state(_wider_init_params, 1, tx, mesh, _shardings(mesh))[0]
    )
    target = checkpoints.abstract_target(shapes, shardings)
    manager = checkpoints.open_manager(directory, _train_config())
    steps_before = sorted(manager.all_steps())

    with pytest.raises(checkpoints.CheckpointMismatchError, match="embed has shape"):
        checkpoints.restore_latest(manager, target)
    steps_after = sorted(manager.all_steps())
    manager.close()

    assert steps_after == steps_before
    assert not (directory / checkpoints.CORRUPT_DIR).exists()


def _finished_phase_files(directory, config):
    """Write config.json and a FINAL marker, as a finished phase leaves them."""
    checkpoints.save_phase_files(directory, config)
    (directory / checkpoints.FINAL_FILE).write_text('{"step": 3}')


def test_phase_config_change_names_fields(tmp_path):
    trained = default.get_config("tiny")
    trained.model.embed_dim = 64
    _finished_phase_files(tmp_path / "sft", trained)
    changed = default.get_config("tiny")
    changed.model.embed_dim = 128

    with pytest.raises(checkpoints.CheckpointMismatchError) as error:
        checkpoints.save_phase_files(tmp_path / "sft", changed)

    assert str(error.value) == (
        f"{(tmp_path / 'sft').resolve()} was trained with model.embed_dim=64 and this run sets "
        "model.embed_dim=128. Use the same model config as that run, or another --workdir"
    )
    saved = json.loads((tmp_path / "sft" / "config.json").read_text())
    assert saved["model"]["embed_dim"] == 64


@pytest.mark.parametrize("phase", ["reward", "conventional", "rl_trait_rl"])
def test_phase_config_checks_source_phase(tmp_path, phase):
    trained = default.get_config("tiny")
    trained.model.embed_dim = 64
    _finished_phase_files(tmp_path / "sft", trained)
    changed = default.get_config("tiny")
    changed.model.embed_dim = 128
    changed.model.num_layers = trained.model.num_layers + 1

    with pytest.raises(checkpoints.CheckpointMismatchError) as error:
        checkpoints.save_phase_files(tmp_path / phase, changed)

    message = str(error.value)
    assert message.startswith(f"{(tmp_path / 'sft').resolve()} was trained with")
    assert f"model.embed_dim=64, model.num_layers={trained.model.num_layers}" in message
    assert f"model.embed_dim=128, model.num_layers={trained.model.num_layers + 1}" in message
    assert not (tmp_path / phase / "config.json").exists()


@pytest.mark.parametrize("field", ["dtype", "matmul_dtype"])
def test_phase_config_allows_compute_dtype(tmp_path, field):
    trained = default.get_config("tiny")
    _finished_phase_files(tmp_path / "sft", trained)
    changed = default.get_config("tiny")
    changed.model[field] = "bfloat16"

    checkpoints.save_phase_files(tmp_path / "reward", changed)

    saved = json.loads((tmp_path / "reward" / "config.json").read_text())
    assert saved["model"][field] == "bfloat16"


def test_phase_config_before_matmul_dtype_loads(tmp_path):
    """A phase saved before `model.matmul_dtype` existed continues with the current config."""
    trained = default.get_config("tiny")
    del trained.model["matmul_dtype"]
    _finished_phase_files(tmp_path / "sft", trained)

    checkpoints.save_phase_files(tmp_path / "reward", default.get_config("tiny"))

    saved = json.loads((tmp_path / "reward" / "config.json").read_text())
    assert saved["model"]["matmul_dtype"] == ""


def test_finished_phase_keeps_its_config(tmp_path, caplog):
    """A finished phase is restored, not rerun, so its config.json keeps what it ran with."""
    trained = default.get_config("tiny")
    _finished_phase_files(tmp_path / "rl_trait_rl", trained)
    changed = default.get_config("tiny")
    changed.rl.rollout_matmul_dtype = "bfloat16"

    with caplog.at_level(logging.WARNING):
        checkpoints.save_phase_files(tmp_path / "rl_trait_rl", changed)

    saved = json.loads((tmp_path / "rl_trait_rl" / "config.json").read_text())
    assert saved["rl"]["rollout_matmul_dtype"] == ""
    assert "keeps the values it ran with" in caplog.text
    assert "rl.rollout_matmul_dtype: '' -> 'bfloat16'" in caplog.text


def test_resumed_phase_records_changed_config(tmp_path, caplog):
    trained = default.get_config("tiny")
    checkpoints.save_phase_files(tmp_path / "rl_trait_rl", trained)
    (tmp_path / "rl_trait_rl" / checkpoints.CHECKPOINT_DIR / "2").mkdir(parents=True)
    changed = default.get_config("tiny")
    changed.rl.rollout_matmul_dtype = "bfloat16"
    changed.rl.steps = trained.rl.steps + 2

    with caplog.at_level(logging.WARNING):
        checkpoints.save_phase_files(tmp_path / "rl_trait_rl", changed)

    saved = json.loads((tmp_path / "rl_trait_rl" / "config.json").read_text())
    assert saved["rl"]["rollout_matmul_dtype"] == "bfloat16"
    assert "resuming" in caplog.text
    assert "rl.rollout_matmul_dtype: '' -> 'bfloat16'; " in caplog.text
    assert f"rl.steps: {trained.rl.steps} -> {trained.rl.steps + 2}" in caplog.text


@pytest.mark.parametrize("text", ["not json", "[]", '{"model": 3}'])
def test_invalid_saved_config_names_file(tmp_path, text):
    _finished_phase_files(tmp_path / "sft", default.get_config("tiny"))
    (tmp_path / "sft" / "config.json").write_text(text)

    with pytest.raises(ValueError, match=r"invalid .*config\.json: expected the JSON config"):
        checkpoints.save_phase_files(tmp_path / "sft", default.get_config("tiny"))

    assert (tmp_path / "sft" / "config.json").read_text() == text


def test_unchanged_rerun_logs_nothing(tmp_path, caplog):
    _finished_phase_files(tmp_path / "sft", default.get_config("tiny"))

    with caplog.at_level(logging.WARNING):
        checkpoints.save_phase_files(tmp_path / "sft", default.get_config("tiny"))

    assert caplog.text == ""


def test_config_differences_names_nested_fields():
    saved = {"rl": {"steps": 4, "trait_weights": {"honesty": 1.0}}, "seed": 0}
    current = {"rl": {"steps": 6, "trait_weights": {"honesty": 1.0}}, "seed": 0, "new": True}
    assert checkpoints.config_differences(saved, current) == [
        "new: None -> True",
        "rl.steps: 4 -> 6",
    ]


def test_phase_config_without_checkpoint_is_replaced(tmp_path):
    trained = default.get_config("tiny")
    trained.model.embed_dim = 64
    checkpoints.save_phase_files(tmp_path / "sft", trained)
    changed = default.get_config("tiny")
    changed.model.embed_dim = 128

    checkpoints.save_phase_files(tmp_path / "sft", changed)

    saved = json.loads((tmp_path / "sft" / "config.json").read_text())
    assert saved["model"]["embed_dim"] == 128


def test_source_phases():
    assert checkpoints.source_phases("sft") == []
    assert checkpoints.source_phases("reward") == ["sft"]
    assert checkpoints.source_phases("conventional") == ["sft"]
    assert checkpoints.source_phases("rl_single_trait_honesty") == ["reward", "sft"]
