"""Meshes, sharding rules, and agreement of results across mesh layouts on 8 CPU devices."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from configs import default
from trait_rl.model import logps, transformer
from trait_rl.model.config import ModelConfig
from trait_rl.parallel import mesh as mesh_lib
from trait_rl.parallel import sharding

RULES = default.get_config().mesh.rules
CFG = ModelConfig(
    vocab_size=64,
    num_layers=2,
    embed_dim=32,
    num_heads=4,
    num_kv_heads=4,
    head_dim=8,
    mlp_dim=64,
    max_len=32,
    tie_embeddings=False,
)
MESHES = [(1, 1, 1), (8, 1, 1), (2, 2, 2), (1, 2, 4)]
LEARNING_RATE = 0.5


def _mesh_config(data: int, fsdp: int, tensor: int) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"data": data, "fsdp": fsdp, "tensor": tensor})


def _loss(params, tokens, mask):
    logits, _ = transformer.forward(params, CFG, tokens, mask)
    logps_BxT = logps.token_logps(logits[:, :-1], tokens[:, 1:]) * mask[:, 1:]
    return -jnp.sum(logps_BxT) / jnp.sum(mask[:, 1:]), logits


@jax.jit
def _sgd_step(params, tokens, mask):
    (loss, logits), grads = jax.value_and_grad(_loss, has_aux=True)(params, tokens, mask)
    new_params = jax.tree.map(lambda p, g: p - LEARNING_RATE * g, params, grads)
    return new_params, loss, logits


def _batch():
    tokens = np.asarray(jax.random.randint(jax.random.key(1), (8, 12), 1, CFG.vocab_size))
    mask = np.ones_like(tokens)
    mask[::2, :3] = 0
    return {"tokens": tokens * mask, "mask": mask}


@pytest.fixture(scope="module")
def results():
    """Initialise, run one SGD step and the logits on every mesh layout."""
    assert jax.device_count() == 8, "tests/conftest.py must request 8 host devices"
    init = functools.partial(transformer.init_params, cfg=CFG)
    axes = transformer.param_logical_axes(CFG)
    outputs = {}
    for shape in MESHES:
        devices = jax.devices()[: int(np.prod(shape))]
        mesh = mesh_lib.make_mesh(_mesh_config(*shape), devices)
        params = sharding.init_sharded(init, jax.random.key(0), mesh, axes, RULES)
        batch = sharding.shard_batch(_batch(), mesh)
        new_params, loss, logits = _sgd_step(params, batch["tokens"], batch["mask"])
        outputs[shape] = (params, batch, new_params, loss, logits)
    return outputs


def test_resolve_mesh_fills_remaining_axis():
    assert mesh_lib.resolve_mesh_shape(_mesh_config(-1, 2, 2), 8) == (2, 2, 2)
    assert mesh_lib.resolve_mesh_shape(_mesh_config(1, -1, 4), 8) == (1, 2, 4)
    assert mesh_lib.resolve_mesh_shape(_mesh_config(8, 1, 1), 8) == (8, 1, 1)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((2, 2, 1), r"mesh.data=2, mesh.fsdp=2, mesh.tensor=1.*product 4.*8 available"),
        ((-1, 3, 1), r"mesh.fsdp=3.*do not divide the 8"),
        ((-1, -1, 2), r"at most one axis may be -1"),
        ((0, 1, 1), r"mesh.data=0"),
    ],
)
def test_bad_mesh_names_fields_and_values(shape, message):
    with pytest.raises(ValueError, match=message):
        mesh_lib.make_mesh(_mesh_config(*shape))


def test_make_mesh_axes():
    mesh = mesh_lib.make_mesh(_mesh_config(-1, 2, 2))
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


def test_logical_to_spec_follows_rules():
    spec = sharding.logical_to_spec(("layers", "embed", "heads", "head_dim"), RULES)
    assert spec == PartitionSpec(None, "fsdp", "tensor", None)
    assert sharding.logical_to_spec(("batch", "length"), RULES) == PartitionSpec(
        ("data", "fsdp"), None
    )


def test_unknown_logical_axis_is_named():
    with pytest.raises(ValueError, match="unknown logical axis 'experts'"):
        sharding.logical_to_spec(("embed", "experts"), RULES)


def test_mesh_axis_used_twice_is_rejected():
    with pytest.raises(ValueError, match="mesh axis 'fsdp' is used by both"):
        sharding.logical_to_spec(("batch", "embed"), RULES)


def test_indivisible_parameter_is_named():
    cfg = ModelConfig(
        vocab_size=30, num_layers=1, embed_dim=16, num_heads=2, num_kv_heads=2,
        head_dim=0, mlp_dim=32, max_len=8,
    )  # fmt: skip
    mesh = mesh_lib.make_mesh(_mesh_config(1, 2, 4))
    init = functools.partial(transformer.init_params, cfg=cfg)
    with pytest.raises(ValueError, match=r"\['embed'\]\['embedding'\].*dimension 30"):
        sharding.init_sharded(
            init, jax.random.key(0), mesh, transformer.param_logical_axes(cfg), RULES
        )


def test_shard_batch_rejects_indivisible_batch():
    mesh = mesh_lib.make_mesh(_mesh_config(4, 2, 1))
    with pytest.raises(ValueError, match="batch dimension 6"):
        sharding.shard_batch({"tokens": np.zeros((6, 4), np.int32)}, mesh)


def test_params_are_sharded_by_rules(results):
    params, batch, new_params, _, _ = results[(2, 2, 2)]
    q_kernel = params["layers"]["attn"]["q"]["kernel"]
    assert q_kernel.sharding.spec == PartitionSpec(None, "fsdp", "tensor", None)
    assert q_kernel.addressable_shards[0].data.shape == (2, 16, 2, 8)
    assert params["embed"]["embedding"].sharding.spec == PartitionSpec("tensor", "fsdp")
    assert params["layers"]["mlp"]["down"]["kernel"].sharding.spec == PartitionSpec(
        None, "tensor", "fsdp"
    )
    assert batch["tokens"].sharding.spec == PartitionSpec(("data", "fsdp"), None)
    assert batch["tokens"].addressable_shards[0].data.shape == (2, 12)

    _, _, _, _, _ = results[(1, 2, 4)]
    wide = results[(1, 2, 4)][0]["layers"]["mlp"]["up"]["kernel"]
    assert wide.addressable_shards[0].data.shape == (2, 16, 16)
    assert new_params["layers"]["attn"]["o"]["kernel"].shape == (2, 4, 8, 32)


def test_results_agree_across_meshes(results):
    reference_params, _, reference_new, reference_loss, reference_logits = results[(1, 1, 1)]
    for shape in MESHES[1:]:
        params, _, new_params, loss, logits = results[shape]
        for got, want in zip(
            jax.tree.leaves(params), jax.tree.leaves(reference_params), strict=True
        ):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        np.testing.assert_allclose(np.asarray(logits), np.asarray(reference_logits), atol=1e-5)
        np.testing.assert_allclose(float(loss), float(reference_loss), rtol=1e-6)
        for got, want in zip(
            jax.tree.leaves(new_params), jax.tree.leaves(reference_new), strict=True
        ):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_sgd_step_changes_parameters(results):
    params, _, new_params, loss, _ = results[(1, 1, 1)]
    assert np.isfinite(float(loss))
    delta = np.abs(
        np.asarray(new_params["layers"]["mlp"]["up"]["kernel"])
        - np.asarray(params["layers"]["mlp"]["up"]["kernel"])
    )
    assert delta.max() > 1e-4
