"""Aggregated execution: batches of ``n_per_device`` simulations on each device, in two passes.

Memory scales with the batch, not with ``n_s``:

1. **pass 1** — summaries and their θ-derivatives of every simulation, a batch at
   a time (``lax.map``), without weight gradients;
2. the gradient of the (small) Fisher loss w.r.t. those summaries and derivatives;
3. **pass 2** — per batch, ``jax.vjp`` of the batch's summaries and derivatives
   w.r.t. the weights, pulled back with the matching slice of that gradient and
   summed over batches (``lax.scan``). Simulator batches are regenerated from
   the same keys rather than stored.

Each batch holds ``n_devices × n_per_device`` simulations laid out across a
:class:`jax.sharding.Mesh` over ``devices`` (axis ``"batch"``), so XLA runs the
devices' shares in parallel and sums the weight gradients with a collective;
the same code serves one CPU, several GPUs and several hosts. Simulation counts
that do not fill the last batch are padded with repeats of earlier simulations,
which are dropped after pass 1 and get a zero cotangent in pass 2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from . import fisher
from .executors import Executor
from .sources import Source

AXIS = "batch"


def mesh_over(devices: Sequence[jax.Device]) -> Mesh:
    """A one-axis mesh (``"batch"``) over ``devices``."""
    return Mesh(np.asarray(devices), (AXIS,))


def on_mesh(tree: Any, sharding: NamedSharding) -> Any:
    """Global arrays with ``sharding`` from values that are identical on every process.

    Each process supplies its own devices' pieces (``jax.make_array_from_callback``),
    so nothing crosses the network; typed PRNG keys travel as their key data.
    """

    def put(leaf):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(put(jax.random.key_data(leaf)), impl=jax.random.key_impl(leaf))
        value = np.asarray(jax.device_get(leaf))
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree.map(put, tree)


def n_batches(n: int, batch_size: int) -> int:
    """How many batches of ``batch_size`` hold ``n`` simulations (the last one padded)."""
    return -(-n // batch_size)


def to_batches(items: Any, n: int, batch_size: int) -> Any:
    """Reshape per-simulation items (leading axis ``n``) to ``(n_batches, batch_size, ...)``.

    The last batch is filled by wrapping around to the first simulations.
    """
    index = np.arange(n_batches(n, batch_size) * batch_size) % max(n, 1)
    return jax.tree.map(lambda a: a[index].reshape((-1, batch_size, *a.shape[1:])), items)


def batches_on_mesh(items: Any, n: int, batch_size: int, sharding: NamedSharding) -> Any:
    """:func:`to_batches` of host arrays, built straight onto the mesh.

    Each device's piece is gathered from the user's array when the global array
    is made, so the host never holds a second full copy of the simulations.
    """
    n_total = n_batches(n, batch_size)

    def put(a):
        a = np.asarray(a)
        shape = (n_total, batch_size, *a.shape[1:])

        def piece(index):
            batches = np.arange(n_total)[index[0]]
            positions = np.arange(batch_size)[index[1]]
            simulations = (batches[:, None] * batch_size + positions[None, :]) % max(n, 1)
            return a[simulations][(slice(None), slice(None), *index[2:])]

        return jax.make_array_from_callback(shape, sharding, piece)

    return jax.tree.map(put, items)


def _pad_cotangent(cotangent: jax.Array, batch_size: int) -> jax.Array:
    n = cotangent.shape[0]
    padding = n_batches(n, batch_size) * batch_size - n
    padded = jnp.concatenate([cotangent, jnp.zeros((padding, *cotangent.shape[1:]), cotangent.dtype)])
    return padded.reshape((-1, batch_size, *cotangent.shape[1:]))


def _unbatch(batched: jax.Array, n: int) -> jax.Array:
    return batched.reshape((-1, *batched.shape[2:]))[:n]


def _is_none(leaf: Any) -> bool:
    return leaf is None


def partition(items: Any, axes: Any) -> tuple[Any, Any]:
    """``(per_simulation, shared)``: ``items`` split by their vmap ``axes`` (``0`` or ``None``),
    each with ``None`` where the other's leaves are. Shared leaves are never batched (or copied)."""
    per_simulation = jax.tree.map(lambda axis, a: a if axis == 0 else None, axes, items, is_leaf=_is_none)
    shared = jax.tree.map(lambda axis, a: None if axis == 0 else a, axes, items, is_leaf=_is_none)
    return per_simulation, shared


def combine(axes: Any, per_simulation: Any, shared: Any) -> Any:
    """The inverse of :func:`partition`."""
    return jax.tree.map(lambda axis, b, s: b if axis == 0 else s, axes, per_simulation, shared, is_leaf=_is_none)


def aggregated(
    source: Source,
    apply: Callable,
    *,
    devices: Sequence[jax.Device],
    n_per_device: int,
    n_s: int,
    n_d: int,
) -> Executor:
    """An :class:`~imnn.executors.Executor` computing in batches across ``devices``.

    ``prepare`` lays stored simulations out as ``(n_batches, n_devices × n_per_device, ...)``
    sharded along the batch axis, so each device holds only its own share.
    """
    mesh = mesh_over(devices)
    batch_size = len(devices) * n_per_device
    across = NamedSharding(mesh, P(None, AXIS))
    replicated = NamedSharding(mesh, P())
    counts = (n_d, n_s - n_d)
    axes = source.with_axes

    def shard_batch(items):
        return jax.lax.with_sharding_constraint(items, NamedSharding(mesh, P(AXIS)))

    def prepare(data):
        if data is None:  # simulator: keys are split inside jit
            return None
        with_items, without_items = source.split(jax.device_get(data), None)
        per_simulation, shared = partition(with_items, axes)
        return (
            batches_on_mesh(per_simulation, n_d, batch_size, across),
            batches_on_mesh(without_items, n_s - n_d, batch_size, across),
            on_mesh(shared, replicated),
        )

    def batches_of(data, key):
        if data is not None:
            return data
        with_items, without_items = source.split(None, key)  # simulator: the keys are made here, inside jit
        return (
            *(jax.lax.with_sharding_constraint(to_batches(i, n, batch_size), across)
              for i, n in zip((with_items, without_items), counts)),
            None,
        )  # fmt: skip

    def with_derivative(w, items, shared):
        items = combine(axes, shard_batch(items), shared)
        return jax.vmap(source.with_derivative, (None, None, axes))(apply, w, items)

    def without_derivative(w, items):
        return jax.vmap(source.without_derivative, (None, None, 0))(apply, w, shard_batch(items))

    def pass_one(w, batches):
        with_b, without_b, shared = batches
        x_d, dx_dθ = jax.lax.map(lambda items: with_derivative(w, items, shared), with_b)
        x_rest = jax.lax.map(lambda items: without_derivative(w, items), without_b)
        x = jnp.concatenate([_unbatch(x_d, n_d), _unbatch(x_rest, n_s - n_d)])
        return x, _unbatch(dx_dθ, n_d)

    def pass_two(w, batches, x_cotangent, dx_cotangent):
        with_b, without_b, shared = batches

        def pull_back(summarise_batch):
            def step(total, inputs):
                items, cotangent = inputs
                _, vjp = jax.vjp(lambda w: summarise_batch(w, items), w)
                return jax.tree.map(jnp.add, total, vjp(cotangent)[0]), None

            return step

        with_cotangents = (_pad_cotangent(x_cotangent[:n_d], batch_size), _pad_cotangent(dx_cotangent, batch_size))
        total = jax.tree.map(jnp.zeros_like, w)
        with_shared = lambda w, items: with_derivative(w, items, shared)
        total, _ = jax.lax.scan(pull_back(with_shared), total, (with_b, with_cotangents))
        without_cotangent = _pad_cotangent(x_cotangent[n_d:], batch_size)
        total, _ = jax.lax.scan(pull_back(without_derivative), total, (without_b, without_cotangent))
        return total

    def summaries(w, data, key):
        return pass_one(w, batches_of(data, key))

    def loss_and_grad(w, data, key, λ, α):
        batches = batches_of(data, key)
        x, dx_dθ = pass_one(w, batches)
        (loss, metrics), cotangents = jax.value_and_grad(fisher.loss, argnums=(0, 1), has_aux=True)(x, dx_dθ, λ, α)
        return (loss, metrics), pass_two(w, batches, *cotangents)

    return Executor(
        loss_and_grad=loss_and_grad,
        summaries=summaries,
        prepare=prepare,
        place=lambda tree: on_mesh(tree, replicated),
    )


def placement(devices: Any, batch_size: int | None, what: str = "batch_size") -> tuple[Callable, Any, list]:
    """``(place, batch sharding, devices)`` of a data-parallel fit over ``devices`` (``None``: no
    placement): the state replicated, batches split along their first axis, whose size ``batch_size``
    (named ``what`` in errors) must be a multiple of the number of devices."""
    if devices is None:
        return (lambda tree: tree), None, []
    devices = list(devices)
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise TypeError(f"`devices` should be a non-empty list of jax devices, but is {devices!r}")
    if batch_size is not None and batch_size % len(devices):
        raise ValueError(f"`{what}` (={batch_size}) should be a multiple of the {len(devices)} `devices`")
    mesh = mesh_over(devices)
    replicated = NamedSharding(mesh, P())
    return (lambda tree: on_mesh(tree, replicated)), NamedSharding(mesh, P(AXIS)), devices
