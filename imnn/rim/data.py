"""What a RIM trains on: batches ``(y, x, args)`` checked against the RIM, from arrays, a
simulator or any iterable of batches (tf.data, grain, a generator)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..adapters import describe


def unpack(name: str, batch: Any) -> tuple:
    """``(y, x, args)`` from a user's ``(y, x, *args)``."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError(f"`{name}` should be a tuple (y, x, *args) of arrays, but is {describe(batch)}")
    y, x, *args = batch
    return y, x, tuple(args)


def check_batch(name: str, y: Any, x: Any | None, args: tuple, x_shape: tuple[int, ...]) -> tuple:
    """``(y, x, args)`` as arrays after checking the shared batch axis, ``x``'s instance shape
    ``x_shape`` (``(*dimensions, channels)``) and finiteness; ``x`` may be ``None``."""
    arrays = [("y", y)] + ([("x", x)] if x is not None else []) + [(f"args[{i}]", a) for i, a in enumerate(args)]
    converted = []
    for label, value in arrays:
        array = jnp.asarray(value)
        if array.ndim == 0:
            raise ValueError(f"`{name}` {label} should have a leading batch axis, but is a scalar")
        if jnp.issubdtype(array.dtype, jnp.inexact) and not bool(jnp.all(jnp.isfinite(array))):
            raise ValueError(f"`{name}` {label} holds non-finite values (NaN or inf)")
        converted.append(array)
    sizes = {label: a.shape[0] for (label, _), a in zip(arrays, converted)}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"`{name}`'s arrays should share their leading batch axis, but have sizes {sizes}")
    if x is not None and tuple(converted[1].shape[1:]) != x_shape:
        raise ValueError(
            f"`{name}` x has instances of shape {tuple(converted[1].shape[1:])}, but `dimensions` and the "
            f"model's channels give {x_shape}"
        )
    if x is None:
        return converted[0], None, tuple(converted[1:])
    return converted[0], converted[1], tuple(converted[2:])


def simulated_example(simulator: Callable, x_shape: tuple[int, ...]) -> tuple:
    """One batch of two simulations, checked like a dataset (the shapes the fit compiles for)."""
    if not callable(simulator):
        raise TypeError(f"`simulator` should be a function key -> (y, x, *args), but is {describe(simulator)}")
    try:
        example = jax.vmap(simulator)(jax.random.split(jax.random.key(0), 2))
    except Exception as error:
        raise ValueError(f"`simulator` failed on a PRNG key: {error}") from error
    return check_batch("simulator", *unpack("simulator's output", tuple(example)), x_shape)


class Batches:
    """Checked batches from an iterable of ``(y, x, *args)`` batches, started again when it runs out.

    Args:
        iterable: re-iterable (a list, ``tf.data.Dataset``, grain loader) or a one-shot iterator.
        x_shape: ``(*dimensions, channels)`` of one ``x``.
        divisor: the number of devices, which must divide every batch size.
        place: puts a checked batch where the fit runs.
    """

    def __init__(self, iterable: Iterable, x_shape: tuple[int, ...], divisor: int = 1,
                 place: Callable = lambda batch: batch):  # fmt: skip
        try:
            self._iterator = iter(iterable)
        except TypeError:
            raise TypeError(
                "`dataset` should be a tuple (y, x, *args) of arrays or an iterable of such batches, "
                f"but is {describe(iterable)}"
            ) from None
        self._iterable, self._x_shape, self._divisor, self._place = iterable, x_shape, divisor, place
        self.pulled = 0
        self.first = self._pull()
        self._pending: tuple | None = self.first  # the first training step uses it

    def next(self) -> tuple:
        """The next checked batch ``(y, x, args)``."""
        if self._pending is not None:
            batch, self._pending = self._pending, None
            return batch
        return self._pull()

    def _pull(self) -> tuple:
        try:
            batch = next(self._iterator)
        except StopIteration:
            self._iterator = iter(self._iterable)
            try:
                batch = next(self._iterator)
            except StopIteration:
                raise ValueError(
                    f"`dataset` ran out after {self.pulled} batches and does not start again (a generator?): "
                    "give a re-iterable one (a list, tf.data, grain) or fewer `epochs` × `n_iterations_in_epoch`"
                ) from None
        self.pulled += 1
        y, x, args = unpack("dataset's batches", tuple(batch))
        checked = check_batch("dataset batch", *(np.asarray(a) for a in (y, x)), tuple(map(np.asarray, args)),
                              self._x_shape)  # fmt: skip
        if checked[0].shape[0] % self._divisor:
            raise ValueError(
                f"`dataset` batch {self.pulled} holds {checked[0].shape[0]} instances, which the "
                f"{self._divisor} `devices` do not divide"
            )
        return self._place(checked)
