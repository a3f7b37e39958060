"""Streaming execution: the aggregated two passes, fed batch by batch from Python iterators.

For simulations that do not fit in host memory. Each device has its own
iterator per kind of batch (a :class:`Feed`); one *pass* reads, from every
device's iterator, the batches holding that device's share of the
simulations. An iteration of the fit makes two passes:

1. pass 1 computes the summaries (and θ-derivatives) of every batch;
2. the gradient of the Fisher loss w.r.t. all of them is taken;
3. pass 2 reads the same batches again (the iterators repeat) and pulls that
   gradient back to the weights batch by batch, summing over batches.

Only the summaries of all simulations are ever held at once, never the
simulations. A fingerprint of every batch is compared between the passes, so
iterators that do not repeat the same simulations in the same order raise an
error instead of giving wrong gradients. Batches are read ``prefetch`` ahead
and placed on their devices while earlier batches compute (JAX dispatches
asynchronously), so disk and compute overlap.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from . import fisher
from .aggregation import AXIS, mesh_over, on_mesh
from .executors import Executor


def batch_sizes(n_per_device_total: int, n_per_device: int) -> list[int]:
    """Sizes of one device's batches in a pass: full batches, then the rest."""
    full, rest = divmod(n_per_device_total, n_per_device)
    return [n_per_device] * full + ([rest] if rest else [])


class Feed:
    """One kind of batch (e.g. ``main``) for every device: read ahead, checked, and placed.

    Args:
        name: the argument the iterators came from, for error messages.
        iterators: one iterator per device in ``devices`` (or, with several processes,
            per device of this process), each yielding batches whose leaves have shape
            ``(size,) + shape`` for the matching ``shape`` in ``item_shapes``.
        devices: the devices of the mesh, in mesh order.
        n_per_device: simulations per full batch.
        n_total: simulations in one pass over all devices (split evenly across them).
        item_shapes: the shapes of one simulation's item: ``[shape]`` for batches that are
            arrays, ``[shape, shape]`` for batches that are pairs of arrays.
        what: how ``n_total`` is called in messages, e.g. ``"n_d"``.
        prefetch: batches read ahead of use.
        cache: keep the batches on the devices after the first pass and stop reading.
    """

    def __init__(
        self,
        name: str,
        iterators: Sequence[Iterator],
        devices: Sequence[jax.Device],
        n_per_device: int,
        n_total: int,
        item_shapes: Sequence[tuple[int, ...]],
        what: str,
        prefetch: int = 2,
        cache: bool = False,
    ):
        n_devices = len(devices)
        self.name, self.what, self.item_shapes = name, what, list(item_shapes)
        self.n_per_device, self.n_total, self.prefetch, self.cache = n_per_device, n_total, prefetch, cache
        self.sizes = batch_sizes(n_total // n_devices, n_per_device)
        self.sharding = NamedSharding(mesh_over(devices), P(AXIS))
        self.global_shape = (n_devices * n_per_device,)
        local = [(i, d) for i, d in enumerate(devices) if d.process_index == jax.process_index()]
        if len(iterators) == n_devices:
            self.slots = [(i, d, iterators[i]) for i, d in local]
        elif len(iterators) == len(local):
            self.slots = [(i, d, it) for (i, d), it in zip(local, iterators)]
        else:
            raise ValueError(
                f"`{name}` should be a list of one iterator per device ({n_devices} devices) "
                f"but has {len(iterators)}"
            )
        if n_total % n_devices:
            raise ValueError(f"`{name}`: {what} = {n_total} simulations cannot be shared evenly by {n_devices} devices")
        for i, _, it in self.slots:
            if not isinstance(it, Iterator):
                raise TypeError(f"`{name}[{i}]` should be an iterator (e.g. `iter(...)`) but is {type(it).__name__}")
        self.pending: list[collections.deque] = [collections.deque() for _ in self.slots]
        self.n_taken = 0  # global batches handed out so far
        self.cached: list[Any] = []
        for slot in range(len(self.slots)):  # the first batches are checked now, before any fit
            self._read(slot)

    @property
    def n_batches(self) -> int:
        """Batches per device in one pass."""
        return len(self.sizes)

    def _read(self, slot: int) -> None:
        index, device, iterator = self.slots[slot]
        queue = self.pending[slot]
        number = queue[-1][0] + 1 if queue else self.n_taken
        position = number % self.n_batches
        try:
            batch = next(iterator)
        except StopIteration:
            raise ValueError(
                f"`{self.name}[{index}]` ran dry after {number} batches ({self.n_batches} per pass): iterators must "
                "repeat the same batches every pass, e.g. tf.data's `.repeat()` after `.batch()`"
            ) from None
        checked = self._check(batch, index, position)
        queue.append((number, jax.device_put(checked, device)))  # the append commits the read

    def _check(self, batch: Any, index: int, position: int) -> Any:
        size = self.sizes[position]
        shapes = self.item_shapes
        paired = len(shapes) == 2
        leaves = tuple(batch) if paired and isinstance(batch, (tuple, list)) else (batch,)
        where = f"`{self.name}[{index}]` batch {position} of its pass"
        if len(leaves) != len(shapes):
            raise ValueError(f"{where} should be a pair of arrays (fiducial, derivative) but is {type(batch).__name__}")
        checked = []
        for leaf, shape in zip(leaves, shapes):
            array = np.asarray(leaf)
            expected = (size, *shape)
            if array.shape != expected:
                raise ValueError(
                    f"{where} should have shape {expected} but has {array.shape}: each device reads its "
                    f"{sum(self.sizes)} of the {self.what} = {self.n_total} simulations of a pass in batches of "
                    f"n_per_device = {self.n_per_device} ({', '.join(map(str, self.sizes))})"
                )
            if not np.issubdtype(array.dtype, np.floating):
                raise TypeError(f"{where} should hold floats but has dtype {array.dtype}")
            if not np.all(np.isfinite(array)):
                raise ValueError(f"{where} contains non-finite values (NaN or inf)")
            padding = np.arange(self.n_per_device) % size  # a short last batch repeats its rows
            checked.append(array if size == self.n_per_device else array[padding])
        return tuple(checked) if paired else checked[0]

    def _take(self) -> Any:
        for slot, queue in enumerate(self.pending):
            while queue and queue[0][0] < self.n_taken:
                queue.popleft()
            while len(queue) <= self.prefetch:
                self._read(slot)
        pieces = [queue[0][1] for queue in self.pending]
        batch = jax.tree.map(
            lambda *parts: jax.make_array_from_single_device_arrays(
                self.global_shape + parts[0].shape[1:], self.sharding, list(parts)
            ),
            *pieces,
        )
        self.n_taken += 1  # commits the take: an interruption before it leaves the feed consistent
        return batch

    def one_pass(self) -> Iterator[Any]:
        """The batches of one pass, as global arrays ``(n_devices × n_per_device, ...)`` over the mesh."""
        if self.cache and len(self.cached) == self.n_batches:
            yield from self.cached
            return
        while self.n_taken % self.n_batches:  # finish a pass left incomplete by an interruption
            self._take()
        batches = []
        for _ in range(self.n_batches):
            batches.append(self._take())
            yield batches[-1]
        if self.cache:
            self.cached = batches


class Stream(NamedTuple):
    """What is computed from one kind of batch.

    ``per_simulation(apply, w, item)`` gives the outputs for ONE simulation's item;
    ``order`` maps the simulations of one pass, in their global order (device 0's
    share first), to their positions in the stacked batches of the pass.
    """

    per_simulation: Callable[[Callable, Any, Any], Any]
    order: np.ndarray


def pass_order(feed: Feed, n_devices: int) -> np.ndarray:
    """Positions in the stacked ``(n_batches, n_devices, n_per_device)`` layout, in global order."""
    batch, row = np.divmod(np.arange(sum(feed.sizes)), feed.n_per_device)  # within one device's share
    device = np.arange(n_devices)[:, None]
    return ((batch * n_devices + device) * feed.n_per_device + row).ravel()


def _fingerprint(batch: Any) -> jax.Array:
    """An order-sensitive integer checksum of a batch (exact, so identical batches always match)."""
    total = jnp.uint32(0)
    for leaf in jax.tree.leaves(batch):
        unsigned = {1: jnp.uint8, 2: jnp.uint16}.get(leaf.dtype.itemsize, jnp.uint32)
        words = jax.lax.bitcast_convert_type(leaf, unsigned).astype(jnp.uint32)  # 8-byte values: two words
        rows = jnp.arange(1, leaf.shape[0] + 1, dtype=jnp.uint32)
        total += jnp.sum(words.reshape(leaf.shape[0], -1).sum(1) * rows)
    return total


def _compiled(fn: Callable) -> Callable:
    """``jax.jit(fn)``; with several processes, each call also waits for its result.

    Computations dispatched asynchronously can run concurrently, and with several
    processes their cross-process collectives could then pair up in a different
    order on each process and deadlock.
    """
    compiled = jax.jit(fn)
    if jax.process_count() == 1:
        return compiled
    return lambda *args: jax.block_until_ready(compiled(*args))


def streamed(
    streams: Sequence[Stream | None],
    combine: Callable[..., tuple[jax.Array, jax.Array]],
    apply: Callable,
    devices: Sequence[jax.Device],
) -> Executor:
    """An :class:`~imnn.executors.Executor` whose data is a tuple of :class:`Feed` (``None`` where empty).

    ``combine(*outputs)`` turns each stream's outputs for all its simulations (global
    order; ``None`` for an empty stream) into ``(x: float(n_s, n_summaries),
    dx_dθ: float(n_d, n_summaries, n_params))``; it must be differentiable.
    """

    def batch_function(stream):
        return lambda w, batch: jax.vmap(stream.per_simulation, (None, None, 0))(apply, w, batch)

    summarise = [None if s is None else _compiled(batch_function(s)) for s in streams]

    def pull_back_fn(stream):
        def pull_back(w, batch, cotangent, total):
            _, vjp = jax.vjp(lambda w: batch_function(stream)(w, batch), w)
            return jax.tree.map(jnp.add, total, vjp(cotangent)[0])

        return _compiled(pull_back)

    pull_back = [None if s is None else pull_back_fn(s) for s in streams]
    fingerprint = _compiled(_fingerprint)

    def in_order(outputs, stream):
        if stream is None:
            return None
        return jax.tree.map(lambda *b: jnp.concatenate(b)[stream.order], *outputs)

    def summaries_of(all_outputs):
        return combine(*(in_order(o, s) for o, s in zip(all_outputs, streams)))

    def loss_of(all_outputs, λ, α):
        return fisher.loss(*summaries_of(all_outputs), λ, α)

    jit_summaries_of = _compiled(summaries_of)
    loss_and_cotangents = _compiled(jax.value_and_grad(loss_of, has_aux=True))

    def pass_one(w, feeds):
        outputs, fingerprints = [], []
        for feed, fn in zip(feeds, summarise):
            outputs.append(None if feed is None else [])
            fingerprints.append([])
            for batch in [] if feed is None else feed.one_pass():  # reads overlap the dispatched computations
                outputs[-1].append(fn(w, batch))
                fingerprints[-1].append(fingerprint(batch))
        return outputs, fingerprints

    def summaries(w, feeds, key):
        return jit_summaries_of(pass_one(w, feeds)[0])

    def loss_and_grad(w, feeds, key, λ, α):
        outputs, first = pass_one(w, feeds)
        (loss, metrics), cotangents = loss_and_cotangents(outputs, λ, α)
        total = jax.tree.map(jnp.zeros_like, w)
        second = []
        for feed, fn, stream_cotangents in zip(feeds, pull_back, cotangents):
            batches = [] if feed is None else feed.one_pass()
            second.append([])
            for batch, cotangent in zip(batches, stream_cotangents or []):
                second[-1].append(fingerprint(batch))
                total = fn(w, batch, cotangent, total)
        _check_repeated(feeds, first, second)
        return (loss, metrics), total

    return Executor(
        loss_and_grad=loss_and_grad,
        summaries=summaries,
        prepare=lambda feeds: feeds,
        place=lambda tree: on_mesh(tree, NamedSharding(mesh_over(devices), P())),
        traceable=False,
    )


def _check_repeated(feeds: Sequence[Feed | None], first: list, second: list) -> None:
    for feed, a, b in zip(feeds, first, second):
        if feed is None or feed.cache:
            continue
        same = np.asarray(jax.device_get([x == y for x, y in zip(a, b)]))
        if not same.all():
            raise ValueError(
                f"`{feed.name}` gave different simulations in the second pass of an iteration "
                f"(first at batch {int(np.argmin(same))}): every pass must repeat the same batches in the same "
                "order (no per-epoch shuffling; `.take(...).batch(...).repeat()` in tf.data), or the gradients "
                "would be wrong; the weights were not updated"
            )
