"""Device mesh with axes ("data", "fsdp", "tensor") built from the `config.mesh` section."""

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

MESH_AXES = ("data", "fsdp", "tensor")


def resolve_mesh_shape(mesh_config: Any, num_devices: int) -> tuple[int, int, int]:
    """Return (data, fsdp, tensor) sizes, with at most one -1 standing for the remaining devices."""
    sizes = [int(mesh_config[name]) for name in MESH_AXES]
    described = ", ".join(
        f"mesh.{name}={size}" for name, size in zip(MESH_AXES, sizes, strict=True)
    )
    for name, size in zip(MESH_AXES, sizes, strict=True):
        if size == 0 or size < -1:
            raise ValueError(f"invalid mesh.{name}={size}: use a positive size or -1 for the rest")
    if sizes.count(-1) > 1:
        raise ValueError(f"invalid mesh ({described}): at most one axis may be -1")

    fixed = int(np.prod([size for size in sizes if size != -1]))
    if -1 in sizes:
        if num_devices % fixed:
            raise ValueError(
                f"invalid mesh ({described}): the fixed axes ({fixed} devices) do not divide "
                f"the {num_devices} available devices"
            )
        sizes[sizes.index(-1)] = num_devices // fixed
    elif fixed != num_devices:
        raise ValueError(
            f"invalid mesh ({described}): the product {fixed} does not match the {num_devices} "
            "available devices; set one axis to -1 to use the rest"
        )
    return tuple(sizes)


def make_mesh(mesh_config: Any, devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """Build the mesh over `devices` (default: all devices) with Auto axis types."""
    devices = list(jax.devices() if devices is None else devices)
    shape = resolve_mesh_shape(mesh_config, len(devices))
    axis_types = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types, devices=devices)
