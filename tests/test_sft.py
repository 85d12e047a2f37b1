"""SFT: masked next-token loss, one compiled step, learning a tiny memorisation task, NaN stop."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from trait_rl.model import sampling, transformer
from trait_rl.model.config import ModelConfig
from trait_rl.parallel import mesh as mesh_lib
from trait_rl.training import loop, optimizer, sft, train_state
from trait_rl.training.metrics import MetricWriter

PAD, BOS, EOS, ASK = 0, 1, 2, 3
KEYS = tuple(range(4, 12))
SEQ_LEN = 8
CFG = ModelConfig(
    vocab_size=32,
    num_layers=2,
    embed_dim=32,
    num_heads=2,
    num_kv_heads=2,
    head_dim=0,
    mlp_dim=64,
    max_len=16,
)


def _answers() -> dict[int, tuple[int, int]]:
    """Return a fixed key -> two-token table, drawn at random so that no rule predicts it."""
    rng = np.random.default_rng(7)
    return {key: tuple(int(t) for t in rng.integers(12, 32, size=2)) for key in KEYS}


def _task_arrays() -> dict[str, np.ndarray]:
    """Sequences `bos ask key a1 a2 eos pad pad`; targets are a1, a2 and eos."""
    rows = [(BOS, ASK, key, *answer, EOS, PAD, PAD) for key, answer in _answers().items()]
    tokens = np.array(rows, dtype=np.int32)
    input_mask = (tokens != PAD).astype(np.int32)
    loss_mask = np.zeros_like(tokens)
    loss_mask[:, 3:6] = 1
    return {"tokens": tokens, "input_mask": input_mask, "loss_mask": loss_mask}


def _mesh(num_devices: int, fsdp: int = 1):
    mesh_config = default.get_config().mesh
    mesh_config.fsdp = fsdp
    return mesh_lib.make_mesh(mesh_config, jax.devices()[:num_devices])


def _train_config(steps: int):
    train = default.get_config("tiny").sft
    train.steps = steps
    train.warmup_steps = 3
    train.learning_rate = 1e-2
    train.batch_size = len(KEYS)
    train.seq_len = SEQ_LEN
    train.log_every = 10
    return train


def _state(mesh, train_config):
    tx = optimizer.make_optimizer(train_config, "sft")
    shardings = sft.policy_shardings(default.get_config(), CFG, mesh)
    state, state_shardings = train_state.init_train_state(
        lambda key: transformer.init_params(key, CFG), 0, tx, mesh, shardings
    )
    return state, state_shardings, tx


def test_loss_uses_only_masked_positions():
    params = transformer.init_params(jax.random.key(0), CFG)
    batch = sft.SFTBatch.from_arrays(_task_arrays())
    loss, metrics = sft.sft_loss(params, CFG, batch)

    logits, _ = transformer.forward(params, CFG, batch.tokens, batch.input_mask)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    nll = [
        -float(log_probs[b, t - 1, batch.tokens[b, t]])
        for b in range(batch.tokens.shape[0])
        for t in range(1, SEQ_LEN)
        if batch.loss_mask[b, t]
    ]
    assert float(loss) == pytest.approx(np.mean(nll), rel=1e-5)
    assert float(metrics["tokens"]) == 3 * len(KEYS)
    assert 0.0 <= float(metrics["accuracy"]) <= 1.0


def test_eos_target_contributes_to_loss():
    params = transformer.init_params(jax.random.key(0), CFG)
    arrays = _task_arrays()
    loss, _ = sft.sft_loss(params, CFG, sft.SFTBatch.from_arrays(arrays))

    changed_eos = {name: array.copy() for name, array in arrays.items()}
    changed_eos["tokens"][:, 5] = 20
    loss_changed_eos, _ = sft.sft_loss(params, CFG, sft.SFTBatch.from_arrays(changed_eos))
    assert abs(float(loss_changed_eos) - float(loss)) > 1e-3

    changed_pad = {name: array.copy() for name, array in arrays.items()}
    changed_pad["tokens"][:, 7] = 20
    loss_changed_pad, _ = sft.sft_loss(params, CFG, sft.SFTBatch.from_arrays(changed_pad))
    assert float(loss_changed_pad) == pytest.approx(float(loss), abs=1e-6)


def test_step_compiles_once_and_donates():
    mesh = _mesh(8, fsdp=4)
    train_config = _train_config(steps=3)
    state, shardings, tx = _state(mesh, train_config)
    step_fn = sft.make_sft_step(CFG, tx, mesh, shardings, optimizer.make_schedule(train_config))
    batches = sft.sft_batches(_task_arrays(), len(KEYS), 0, 0, mesh)

    old_state = state
    state, metrics = step_fn(state, next(batches))
    assert step_fn._cache_size() == 1
    assert old_state.params["embed"]["embedding"].is_deleted()
    for _ in range(3):
        state, metrics = step_fn(state, next(batches))
    assert step_fn._cache_size() == 1
    assert int(state.step) == 4
    assert set(metrics) == {"loss", "accuracy", "tokens", "grad_norm", "learning_rate"}
    embedding = state.params["embed"]["embedding"]
    assert embedding.sharding.spec == shardings.params["embed"]["embedding"].spec


@pytest.fixture(scope="module")
def one_device():
    """A 1-device mesh with one compiled SFT step, shared so the step compiles once per module."""
    mesh = _mesh(1)
    train_config = _train_config(steps=60)
    _, shardings, tx = _state(mesh, train_config)
    step_fn = sft.make_sft_step(CFG, tx, mesh, shardings)
    return mesh, train_config, tx, step_fn


def _fit(one_device, state, steps, writer=None):
    mesh, train_config, _, step_fn = one_device
    train_config = train_config.copy_and_resolve_references()
    train_config.steps = steps
    arrays = _task_arrays()
    return loop.fit(
        state,
        step_fn,
        lambda start: sft.sft_batches(arrays, len(KEYS), 0, start, mesh),
        train_config=train_config,
        prefix="sft",
        writer=writer,
    )


def test_loss_decreases_in_few_steps(one_device):
    mesh, train_config, _, _ = one_device
    state, _, _ = _state(mesh, train_config)
    batch = sft.SFTBatch.from_arrays(_task_arrays())
    initial_loss, _ = sft.sft_loss(state.params, CFG, batch)
    state = _fit(one_device, state, steps=20)
    loss, _ = sft.sft_loss(state.params, CFG, batch)
    assert float(loss) < 0.5 * float(initial_loss)


def test_memorises_answers_and_decodes_them(one_device, tmp_path):
    mesh, train_config, _, _ = one_device
    state, _, _ = _state(mesh, train_config)
    arrays = _task_arrays()
    initial_loss, _ = sft.sft_loss(state.params, CFG, sft.SFTBatch.from_arrays(arrays))

    with MetricWriter(tmp_path) as writer:
        state = _fit(one_device, state, steps=train_config.steps, writer=writer)
    final_loss, metrics = sft.sft_loss(state.params, CFG, sft.SFTBatch.from_arrays(arrays))
    assert float(final_loss) < 0.1 * float(initial_loss)
    assert float(metrics["accuracy"]) == 1.0
    logged = (tmp_path / "metrics.jsonl").read_text()
    assert '"sft/loss"' in logged

    prompts = jnp.array([(BOS, ASK, key) for key in KEYS], jnp.int32)
    output = sampling.sample(
        state.params,
        CFG,
        sampling.SamplingConfig(max_new_tokens=4, greedy=True, stop_ids=(EOS,)),
        prompts,
        jnp.ones_like(prompts),
        jax.random.key(0),
    )
    for row, answer in enumerate(_answers().values()):
        assert output.tokens_BxN[row, :3].tolist() == [*answer, EOS]
    assert bool(jnp.all(output.stopped_B))


def test_nan_loss_stops_with_step(one_device):
    mesh, train_config, _, _ = one_device
    state, _, _ = _state(mesh, train_config)
    embedding = state.params["embed"]["embedding"]
    poisoned = jax.tree.map(lambda x: x, state.params)
    poisoned["embed"]["embedding"] = embedding.at[KEYS[0]].set(jnp.nan)
    state = dataclasses.replace(state, params=poisoned)

    with pytest.raises(FloatingPointError, match="loss is nan at step 1"):
        _fit(one_device, state, steps=5)
