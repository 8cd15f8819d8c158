"""Data parallelism over basins: each training batch's basins are split across devices.

HBV is a scan over days; XLA runs the loop body of one program on one core of a CPU, so on a
multi-core host the basins of a batch are spread over *host devices* (one per core), and on a
GPU/TPU host over the accelerators. Network parameters and the optimiser state are replicated;
the gradient is the sum over the devices' basins, which XLA's partitioner inserts.

On a CPU, host devices must be created before JAX starts its backend: :func:`use_host_devices`
does that (the ``dpljax`` command calls it from ``train.devices`` before any computation).
"""
from __future__ import annotations

import os

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

AXIS = "basin"


def use_host_devices(n: int | None) -> None:
    """Ask for ``n`` CPU devices (a no-op for ``None`` or 1, or where an accelerator is used).
    Must run before the first JAX computation of the process."""
    if not n or n <= 1 or os.environ.get("JAX_PLATFORMS", "cpu").split(",")[0] not in ("", "cpu"):
        return
    try:
        if jax.config.jax_num_cpu_devices < n:
            jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:
        pass  # already started: basin_mesh reports how many devices there are


def basin_mesh(n: int) -> Mesh:
    """A one-axis mesh of ``n`` devices (the default backend's) for sharding basins."""
    devices = jax.devices()
    if n > len(devices):
        kind = devices[0].platform
        hint = (" On a CPU host, set train.devices before JAX starts (the dpljax command does), "
                f"or XLA_FLAGS=--xla_force_host_platform_device_count={n}, or call "
                f"dpljax.parallel.use_host_devices({n}) right after importing jax."
                if kind == "cpu" else "")
        raise ValueError(f"train.devices={n} but JAX has {len(devices)} {kind} device(s).{hint}")
    return jax.make_mesh((n,), (AXIS,), axis_types=(AxisType.Auto,), devices=devices[:n])


def replicate(tree, n: int):
    """Place every array of ``tree`` on the first ``n`` devices, as ``train.devices=n`` trains
    (``tree`` unchanged for ``n == 1``)."""
    return jax.device_put(tree, NamedSharding(basin_mesh(n), P())) if n > 1 else tree


def shard_basins(tree, mesh: Mesh):
    """Inside a jitted function: split the leading (basin) axis of every array over ``mesh``."""
    spec = NamedSharding(mesh, P(AXIS))
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, spec), tree)
