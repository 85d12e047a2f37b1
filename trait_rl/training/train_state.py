"""Train state, its shardings and the jitted train step.

The state is built from shapes first (`jax.eval_shape`), then shardings are derived from the
parameters' logical axes, and a jitted init writes straight into those shardings, so no full
copy of the parameters ever sits on one device.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

PyTree = Any
LossFn = Callable[[PyTree, Any], tuple[jax.Array, dict[str, jax.Array]]]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything a phase needs to resume exactly: the data position is `step` itself.

    `rng` is raw uint32 key data (`jax.random.key_data`), which Orbax saves like any array.
    """

    step: jax.Array  # int32 scalar: optimizer updates applied so far.
    params: PyTree
    opt_state: PyTree
    rng: jax.Array


def raw_key(rng: jax.Array | int) -> jax.Array:
    """Return uint32 key data from a seed, a typed key or key data."""
    if isinstance(rng, int):
        return jax.random.key_data(jax.random.key(rng))
    if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(rng)
    return rng


def _path_keys(path) -> tuple:
    return tuple(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path)


def opt_state_shardings(
    opt_state_shapes: PyTree, params_shapes: PyTree, param_shardings: PyTree, replicated
) -> PyTree:
    """Shard each optimizer-state leaf like the parameter it tracks; replicate the rest.

    Moment trees (Adam's mu and nu, masked or not) end in the parameter's own key path, so a leaf
    whose path ends in a parameter's path and whose shape matches gets that parameter's sharding.
    Counters and other non-parameter leaves are replicated.
    """
    shapes = jax.tree_util.tree_leaves(params_shapes)
    shardings = jax.tree_util.tree_flatten_with_path(param_shardings)[0]
    by_path = {
        _path_keys(path): (sharding, leaf.shape)
        for (path, sharding), leaf in zip(shardings, shapes, strict=True)
    }

    def pick(path, leaf):
        keys = _path_keys(path)
        for start in range(len(keys)):
            sharding, shape = by_path.get(keys[start:], (None, None))
            if sharding is not None and shape == leaf.shape:
                return sharding
        return replicated

    return jax.tree_util.tree_map_with_path(pick, opt_state_shapes)


def state_shardings(
    optimizer: optax.GradientTransformation, params_shapes: PyTree, param_shardings: PyTree, mesh
) -> TrainState:
    """Return a TrainState of NamedShardings for a state with parameters of `params_shapes`."""
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    opt_shapes = jax.eval_shape(optimizer.init, params_shapes)
    return TrainState(
        step=replicated,
        params=param_shardings,
        opt_state=opt_state_shardings(opt_shapes, params_shapes, param_shardings, replicated),
        rng=replicated,
    )


def init_train_state(
    init_params_fn: Callable[[jax.Array], PyTree],
    rng: jax.Array | int,
    optimizer: optax.GradientTransformation,
    mesh,
    param_shardings: PyTree,
) -> tuple[TrainState, TrainState]:
    """Initialise parameters and optimizer state directly into their shardings.

    `init_params_fn(key)` returns the parameter tree (for example
    `lambda key: transformer.init_params(key, cfg)`). Returns (state, shardings of the state).
    """
    key_data = raw_key(rng)
    init_key, state_key = jax.random.split(jax.random.wrap_key_data(key_data))

    def init(init_key, state_key):
        params = init_params_fn(init_key)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=optimizer.init(params),
            rng=jax.random.key_data(state_key),
        )

    shapes = jax.eval_shape(init, init_key, state_key)
    shardings = state_shardings(optimizer, shapes.params, param_shardings, mesh)
    state = jax.jit(init, out_shardings=shardings)(init_key, state_key)
    return state, shardings


def train_state_from_params(
    params: PyTree,
    rng: jax.Array | int,
    optimizer: optax.GradientTransformation,
    mesh,
    param_shardings: PyTree,
) -> tuple[TrainState, TrainState]:
    """Start a new phase from existing parameters (step 0, fresh optimizer state).

    The given params are copied into the state's shardings, not donated, because the caller may
    still need them (for example as the frozen reference policy).
    """
    params_shapes = jax.eval_shape(lambda p: p, params)
    shardings = state_shardings(optimizer, params_shapes, param_shardings, mesh)

    def init(params, key_data):
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=optimizer.init(params),
            rng=key_data,
        )

    init_jit = jax.jit(init, in_shardings=(param_shardings, shardings.rng), out_shardings=shardings)
    return init_jit(params, raw_key(rng)), shardings


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    shardings: TrainState,
    batch_shardings: PyTree,
    schedule: optax.Schedule | None = None,
):
    """Jit `step(state, batch) -> (state, metrics)` once, with explicit shardings and donation.

    `loss_fn(params, batch) -> (loss, metrics)`. The input state's buffers are donated, so the
    caller must use only the returned state. Metrics come back replicated and include
    `grad_norm` and, when `schedule` is given, `learning_rate` (the rate used by this update).
    """

    def train_step(state: TrainState, batch) -> tuple[TrainState, dict[str, jax.Array]]:
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (_, metrics), grads = grad_fn(state.params, batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**metrics, "grad_norm": optax.global_norm(grads)}
        if schedule is not None:
            metrics["learning_rate"] = jnp.asarray(schedule(state.step), jnp.float32)
        new_state = TrainState(
            step=state.step + 1, params=params, opt_state=opt_state, rng=state.rng
        )
        return new_state, metrics

    replicated = shardings.step
    return jax.jit(
        train_step,
        in_shardings=(shardings, batch_shardings),
        out_shardings=(shardings, replicated),
        donate_argnums=(0,),
    )
