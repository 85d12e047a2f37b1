"""Map logical axis names to mesh axes, and place parameters and batches on a mesh.

Rules come from `config.mesh.rules`: a sequence of (logical name, mesh axis | tuple of mesh
axes | None). Parameters declare logical axes only, so changing the layout is a config change.
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]
BATCH_AXES = ("data", "fsdp")


def _is_axes_leaf(node: Any) -> bool:
    return isinstance(node, tuple) and all(isinstance(name, str) for name in node)


def logical_to_spec(axes: Sequence[str], rules: Rules) -> PartitionSpec:
    """Translate logical axis names into a PartitionSpec; unknown names are an error."""
    table = dict(rules)
    mesh_axes = []
    used: dict[str, str] = {}
    for name in axes:
        if name not in table:
            raise ValueError(
                f"unknown logical axis {name!r}: add it to config.mesh.rules "
                f"(known: {', '.join(table)})"
            )
        target = table[name]
        for mesh_axis in (target,) if isinstance(target, str) else (target or ()):
            if mesh_axis in used:
                raise ValueError(
                    f"invalid config.mesh.rules for axes {tuple(axes)}: mesh axis {mesh_axis!r} "
                    f"is used by both {used[mesh_axis]!r} and {name!r}"
                )
            used[mesh_axis] = name
        mesh_axes.append(tuple(target) if isinstance(target, list) else target)
    return PartitionSpec(*mesh_axes)


def param_shardings(mesh: Mesh, logical_axes_tree: Any, rules: Rules) -> Any:
    """Return a NamedSharding per leaf of a logical-axes pytree."""
    return jax.tree.map(
        lambda axes: NamedSharding(mesh, logical_to_spec(axes, rules)),
        logical_axes_tree,
        is_leaf=_is_axes_leaf,
    )


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Shard the leading (batch) dimension over ("data", "fsdp"), replicate the rest."""
    if ndim == 0:
        return replicated(mesh)
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    """Return a sharding that keeps a full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def _axis_size(mesh: Mesh, entry: str | tuple[str, ...] | None) -> int:
    if entry is None:
        return 1
    names = (entry,) if isinstance(entry, str) else entry
    return int(np.prod([mesh.shape[name] for name in names]))


def check_divisible(shapes_tree: Any, shardings_tree: Any) -> None:
    """Raise when a sharded dimension does not divide evenly over its mesh axes."""
    paths_and_shapes = jax.tree_util.tree_flatten_with_path(shapes_tree)[0]
    shardings = jax.tree.leaves(shardings_tree)
    for (path, shape), sharding in zip(paths_and_shapes, shardings, strict=True):
        for dim, entry in zip(shape.shape, sharding.spec, strict=False):
            size = _axis_size(sharding.mesh, entry)
            if dim % size:
                raise ValueError(
                    f"parameter {jax.tree_util.keystr(path)} with shape {shape.shape} cannot be "
                    f"sharded: dimension {dim} is not divisible by mesh axes {entry} (size "
                    f"{size}); change the model size or config.mesh"
                )


def init_sharded(
    init_fn: Callable[[jax.Array], Any],
    rng: jax.Array,
    mesh: Mesh,
    logical_axes_tree: Any,
    rules: Rules,
) -> Any:
    """Initialise parameters directly into their shardings: shapes first, then a jitted init."""
    shapes = jax.eval_shape(init_fn, rng)
    shardings = param_shardings(mesh, logical_axes_tree, rules)
    if jax.tree.structure(shapes) != jax.tree.structure(shardings):
        raise ValueError(
            "logical axes tree does not match the parameters returned by init_fn: "
            f"{jax.tree.structure(shardings)} vs {jax.tree.structure(shapes)}"
        )
    check_divisible(shapes, shardings)
    return jax.jit(init_fn, out_shardings=shardings)(rng)


def shard_batch(batch_pytree: Any, mesh: Mesh) -> Any:
    """Place host arrays on the mesh as global arrays, batch dimension over ("data", "fsdp").

    Each process passes its own slice of the global batch (on one host: the whole batch).
    """
    batch_size = _axis_size(mesh, BATCH_AXES) // max(1, jax.process_count())

    def place(array: Any) -> jax.Array:
        array = np.asarray(array)
        if array.ndim and array.shape[0] % batch_size:
            raise ValueError(
                f"batch dimension {array.shape[0]} of an array with shape {array.shape} is not "
                f"divisible by the {batch_size} local data-parallel devices (mesh.data x "
                "mesh.fsdp); change the batch size"
            )
        sharding = batch_sharding(mesh, array.ndim)
        return jax.make_array_from_process_local_data(sharding, array)

    return jax.tree.map(place, batch_pytree)
