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
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from . import fisher, interrupts
from .aggregation import AXIS, mesh_over, on_mesh
from .executors import Executor, exclusive


def batch_sizes(n_per_device_total: int, n_per_device: int) -> list[int]:
    """Sizes of one device's batches in a pass: full batches, then the rest."""
    full, rest = divmod(n_per_device_total, n_per_device)
    return [n_per_device] * full + ([rest] if rest else [])


class _Entry:
    """One batch an iterator handed over: its number (position in the feed) and its state."""

    __slots__ = ("batch", "error", "number", "placed")

    def __init__(self, number: int, batch: Any):
        self.number, self.batch, self.placed, self.error = number, batch, None, None


class Feed:
    """One kind of batch (e.g. ``main``) for every device: read ahead, checked, and placed.

    Batch accounting is exact whatever goes wrong: a batch an iterator hands over is
    recorded at once (with Ctrl-C held back, :mod:`imnn.interrupts`), before it is
    checked or placed, so its number is never reused. A batch that fails its check
    keeps its place and its error; the error is raised whenever the batch is needed,
    and a pass left incomplete (by an error or an interrupt) is skipped to its end
    before the next one starts, so every pass begins at the iterators' first batch.

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
        self.pending: list[collections.deque[_Entry]] = [collections.deque() for _ in self.slots]
        self.failed_inside = [False] * len(self.slots)  # an exception escaped the iterator's `next`
        self.n_taken = 0  # global batches handed out so far
        self.cached: list[Any] = []
        for slot in range(len(self.slots)):  # the first batches are checked now, before any fit
            entry = self._read(slot)
            if entry.error is not None:
                raise entry.error

    @property
    def n_batches(self) -> int:
        """Batches per device in one pass."""
        return len(self.sizes)

    def _read(self, slot: int) -> _Entry:
        iterator = self.slots[slot][2]
        queue = self.pending[slot]
        number = queue[-1].number + 1 if queue else self.n_taken
        with interrupts.deferred():  # between `next` and `append`, a Ctrl-C would lose the batch
            try:
                batch = next(iterator)
            except StopIteration:
                raise ValueError(self._ran_dry(slot, number)) from None
            except BaseException:
                self.failed_inside[slot] = True
                raise
            entry = _Entry(number, batch)
            queue.append(entry)  # the append commits the read
        self._place(slot, entry)
        return entry

    def _ran_dry(self, slot: int, number: int) -> str:
        message = (
            f"`{self.name}[{self.slots[slot][0]}]` ran dry after {number} batches ({self.n_batches} per pass): "
            "iterators must repeat the same batches every pass, e.g. tf.data's `.repeat()` after `.batch()`"
        )
        if self.failed_inside[slot]:
            message += (
                "; it stopped after an exception or Ctrl-C inside it, and a Python generator ends for good "
                "then: rebuild the iterators (imnn.loaders' iterators and class-based ones carry on)"
            )
        return message

    def _place(self, slot: int, entry: _Entry) -> None:
        """Check ``entry`` and put it on its device; a failed check is kept as its error."""
        if entry.placed is not None or entry.error is not None:
            return
        index, device, _ = self.slots[slot]
        try:
            checked = self._check(entry.batch, index, entry.number % self.n_batches)
        except (TypeError, ValueError) as error:
            entry.error = error
            return
        entry.placed = jax.device_put(checked, device)
        entry.batch = None

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

    def _take(self, use: bool = True) -> Any:
        """The next global batch (``use=False``: only step over it, e.g. to end a broken pass)."""
        for slot, queue in enumerate(self.pending):
            while queue and queue[0].number < self.n_taken:
                queue.popleft()
            while len(queue) <= self.prefetch:
                self._read(slot)
        batch = None
        if use:
            entries = [queue[0] for queue in self.pending]
            for slot, entry in enumerate(entries):
                self._place(slot, entry)  # placing may have been interrupted before
            rejected = [entry.error for entry in entries if entry.error is not None]
            if rejected:
                self.n_taken += 1  # the pass is abandoned: the next one starts at its own first batch
                raise rejected[0]
            batch = jax.tree.map(
                lambda *parts: jax.make_array_from_single_device_arrays(
                    self.global_shape + parts[0].shape[1:], self.sharding, list(parts)
                ),
                *(entry.placed for entry in entries),
            )
        self.n_taken += 1  # commits the take: an interruption before it leaves the feed consistent
        return batch

    def one_pass(self) -> Iterator[Any]:
        """The batches of one pass, as global arrays ``(n_devices × n_per_device, ...)`` over the mesh."""
        if self.cache and len(self.cached) == self.n_batches:
            yield from self.cached
            return
        while self.n_taken % self.n_batches:  # step over the rest of a pass left incomplete
            self._take(use=False)
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


def _per_device(fn: Callable, mesh: Mesh, in_specs: tuple) -> Callable:
    """``jax.jit`` of ``fn`` run by each device on its own rows: no collective, no wait on another device.

    Arguments with spec ``P()`` are the same on every device, those with ``P(AXIS)`` are
    split by rows; every output is split by rows. Replicated arguments are cast to
    per-device values, so differentiating with respect to them (the weights) gives
    each device its own partial gradient instead of an all-reduce.
    """

    def local(*args):
        args = [
            jax.tree.map(lambda a: jax.lax.pcast(a, AXIS, to="varying"), arg) if spec == P() else arg
            for arg, spec in zip(args, in_specs)
        ]
        return fn(*args)

    return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=P(AXIS)))


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

    Every per-batch program (summaries, pull-back, fingerprint) runs on each device's
    rows alone, so the many of them dispatched asynchronously never contain a
    collective; each device accumulates its own partial gradient. The only programs
    with collectives — the loss after pass 1, the sum of the partial gradients and the
    fingerprint comparison after pass 2, and the summaries of a pass — run one at a
    time (:func:`~imnn.executors.exclusive`).
    """
    mesh = mesh_over(devices)
    n_devices = len(devices)
    replicated = NamedSharding(mesh, P())

    def batch_function(stream):
        return lambda w, batch: jax.vmap(stream.per_simulation, (None, None, 0))(apply, w, batch)

    def pull_back_fn(stream):
        def pull_back(w, batch, cotangent, partial):
            _, vjp = jax.vjp(lambda w: batch_function(stream)(w, batch), w)
            return jax.tree.map(lambda p, g: p + g[None], partial, vjp(cotangent)[0])

        return _per_device(pull_back, mesh, (P(), P(AXIS), P(AXIS), P(AXIS)))

    summarise = [None if s is None else _per_device(batch_function(s), mesh, (P(), P(AXIS))) for s in streams]
    pull_back = [None if s is None else pull_back_fn(s) for s in streams]
    fingerprint = _per_device(lambda batch: _fingerprint(batch)[None], mesh, (P(AXIS),))
    zero_partials = jax.jit(
        lambda w: jax.tree.map(lambda a: jnp.zeros((n_devices, *a.shape), a.dtype), w),
        out_shardings=NamedSharding(mesh, P(AXIS)),
    )

    def in_order(outputs, stream):
        if stream is None:
            return None
        return jax.tree.map(lambda *b: jnp.concatenate(b)[stream.order], *outputs)

    def replicate(tree):  # what later programs read whole, so that they need no collective
        return jax.lax.with_sharding_constraint(tree, jax.tree.map(lambda _: replicated, tree))

    def summaries_of(all_outputs):
        return replicate(combine(*(in_order(o, s) for o, s in zip(all_outputs, streams))))

    def loss_of(all_outputs, λ, α):
        return fisher.loss(*summaries_of(all_outputs), λ, α)

    def finish(partials, first, second):
        """The gradient (partials summed over devices) and, per feed, whether both passes read the same."""
        same = [jnp.stack([jnp.all(a == b) for a, b in zip(f, s)]) if f else None for f, s in zip(first, second)]
        return replicate((jax.tree.map(lambda p: p.sum(0), partials), same))

    def loss_and_cotangents_of(all_outputs, λ, α):
        value, cotangents = jax.value_and_grad(loss_of, has_aux=True)(all_outputs, λ, α)
        by_rows = jax.tree.map(lambda _: NamedSharding(mesh, P(AXIS)), cotangents)
        return replicate(value), jax.lax.with_sharding_constraint(cotangents, by_rows)  # as pass 2 reads them

    jit_summaries_of = exclusive(summaries_of)
    loss_and_cotangents = exclusive(loss_and_cotangents_of)
    jit_finish = exclusive(finish)

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
        partials = zero_partials(w)
        second = []
        for feed, fn, stream_cotangents in zip(feeds, pull_back, cotangents):
            batches = [] if feed is None else feed.one_pass()
            second.append([])
            for batch, cotangent in zip(batches, stream_cotangents or []):
                second[-1].append(fingerprint(batch))
                partials = fn(w, batch, cotangent, partials)
        total, same = jit_finish(partials, first, second)
        _check_repeated(feeds, same)
        return (loss, metrics), total

    return Executor(
        loss_and_grad=loss_and_grad,
        summaries=summaries,
        prepare=lambda feeds: feeds,
        place=lambda tree: on_mesh(tree, replicated),
        traceable=False,
    )


def _check_repeated(feeds: Sequence[Feed | None], same: list) -> None:
    for feed, agree in zip(feeds, same):
        if feed is None or feed.cache or agree is None:
            continue
        agree = np.asarray(jax.device_get(agree))
        if not agree.all():
            raise ValueError(
                f"`{feed.name}` gave different simulations in the second pass of an iteration "
                f"(first at batch {int(np.argmin(agree))}): every pass must repeat the same batches in the same "
                "order (no per-epoch shuffling; `.take(...).batch(...).repeat()` in tf.data), or the gradients "
                "would be wrong; the weights were not updated"
            )
