"""Convolutional RIM networks for fields: :class:`Hourglass` and :class:`Unet` (1-, 2- and 3-D).

Both map ONE instance, channels-last: ``x`` and ``score`` are float(*dimensions, channels)
and the hidden state is float(*dimensions / 2**len(ch_mult), hidden_units). They follow
torch_rim's ``Hourglass`` (arguments, defaults, data flow) with its defects fixed: the
convolutional GRU updates all of its state, ``hidden_units`` is a hyper-parameter that
is saved, ``condition_on_observation`` works (for a ``y`` on the same grid as ``x``),
``resample_with_conv=False`` resamples with the FIR kernel, and :class:`Unet` has skip
connections (torch_rim's is an empty file).
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .models import activation, hyperparameters

COMBINE_METHODS = ("cat", "sum")


class ConvGRU(nn.Module):
    """A convolutional GRU cell: ``h' = (1 − u)·h + u·tanh(W * [x, r·h])`` with update and reset
    gates ``u, r = σ(W_g * [x, h])``. ``x`` and ``h`` are float(1, *spatial, ·); returns ``h'``."""

    features: int
    kernel_size: int

    @nn.compact
    def __call__(self, x: jax.Array, h: jax.Array) -> jax.Array:
        kernel = (self.kernel_size,) * (x.ndim - 2)
        gates = nn.sigmoid(nn.Conv(2 * self.features, kernel, padding="SAME")(jnp.concatenate([x, h], -1)))
        update, reset = jnp.split(gates, 2, axis=-1)
        candidate = jnp.tanh(nn.Conv(self.features, kernel, padding="SAME")(jnp.concatenate([x, reset * h], -1)))
        return (1 - update) * h + update * candidate


class GRUBlock(nn.Module):
    """Two stacked convolutional GRUs of ``hidden_units // 2`` channels each, after Morningstar
    et al. (2019): ``h₁' = GRU₁(x, h₁)``, ``h₂' = GRU₂(tanh(conv(h₁')), h₂)``, out ``conv(h₂')``
    with ``x``'s channels; the new state is ``[h₁', h₂']`` (torch_rim keeps the old ``h₁``)."""

    hidden_units: int
    kernel_size: int
    conv_kernel_size: int

    @nn.compact
    def __call__(self, x: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        half = self.hidden_units // 2
        kernel = (self.conv_kernel_size,) * (x.ndim - 2)
        h1, h2 = jnp.split(h, 2, axis=-1)
        h1 = ConvGRU(half, self.kernel_size)(x, h1)
        h2 = ConvGRU(half, self.kernel_size)(jnp.tanh(nn.Conv(half, kernel, padding="SAME")(h1)), h2)
        return nn.Conv(x.shape[-1], kernel, padding="SAME")(h2), jnp.concatenate([h1, h2], -1)


def _fir(x: jax.Array, taps: tuple[float, ...], stride: int) -> jax.Array:
    """Blur every channel of float(1, *spatial, c) with the separable, normalised FIR ``taps``
    (SAME padding), keeping every ``stride``-th sample."""
    d = x.ndim - 2
    k = np.asarray(taps, np.float64)
    kernel = k
    for _ in range(d - 1):
        kernel = np.multiply.outer(kernel, k)
    kernel = jnp.asarray(kernel / kernel.sum(), x.dtype)[..., None, None]
    c = x.shape[-1]
    spatial = "DHW"[-d:]
    layout = (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C")
    dims = jax.lax.conv_dimension_numbers(x.shape, (*kernel.shape[:-2], 1, c), layout)
    return jax.lax.conv_general_dilated(x, jnp.tile(kernel, (1,) * d + (1, c)), (stride,) * d, "SAME",
                                        dimension_numbers=dims, feature_group_count=c)  # fmt: skip


class Hourglass(nn.Module):
    """torch_rim's hourglass RIM network, channels-last, for fields of ``dimensions`` = 1, 2 or 3.

    ``[x, score]`` (and ``y`` with ``condition_on_observation``) → input conv to ``nf`` channels →
    per level ``i``: ``num_layers`` convs, then a stride-2 downsampling to ``c·ch_mult[i]`` →
    :class:`GRUBlock` at the bottom → mirrored upsampling and convs → 1×1 conv to ``channels``.
    Every spatial size must be divisible by ``2**len(ch_mult)``.

    Attributes:
        channels: channels of ``x``.
        dimensions: 1, 2 or 3 spatial axes.
        nf, ch_mult: base width and per-level channel multipliers.
        hidden_units: channels of the GRU state (even: two GRUs of half each).
        num_layers: convs per level.
        kernel_size: of the level convs and the GRUs; ``conv_kernel_size`` (GRU block's
            projections) and ``input_kernel_size`` default to it.
        condition_on_observation: also feed ``y`` (same grid as ``x``) to the input conv.
        resample_with_conv: stride-2 (transposed) convs; else FIR resampling (``fir_kernel``)
            and a 1×1 conv.
        combine_method: how :class:`Unet` joins a skip connection, ``"cat"`` or ``"sum"``.
        activation: ``"tanh"``, ``"relu"``, ``"elu"``, ``"swish"``/``"silu"`` or ``"sigmoid"``.
    """

    channels: int
    dimensions: int = 2
    nf: int = 32
    ch_mult: tuple[int, ...] = (2, 2)
    hidden_units: int = 32
    num_layers: int = 2
    kernel_size: int = 3
    conv_kernel_size: int | None = None
    input_kernel_size: int | None = None
    condition_on_observation: bool = False
    resample_with_conv: bool = True
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    combine_method: str = "cat"
    activation: str = "tanh"
    skip_connections: ClassVar[bool] = False

    def __post_init__(self):
        if self.dimensions not in (1, 2, 3):
            raise ValueError(f"`dimensions` should be 1, 2 or 3 spatial axes, but is {self.dimensions!r}")
        if not isinstance(self.hidden_units, int) or self.hidden_units < 2 or self.hidden_units % 2:
            raise ValueError(
                f"`hidden_units` should be an even int ≥ 2 (two GRUs of half each), but is {self.hidden_units!r}"
            )
        if self.combine_method not in COMBINE_METHODS:
            raise ValueError(f"`combine_method` should be one of {COMBINE_METHODS}, but is {self.combine_method!r}")
        if not self.ch_mult or not all(isinstance(m, int) and m > 0 for m in self.ch_mult):
            raise ValueError(f"`ch_mult` should be a non-empty tuple of positive ints, but is {self.ch_mult!r}")
        activation(self.activation)
        super().__post_init__()

    def _kernel(self, size: int | None) -> tuple[int, ...]:
        return ((size or self.kernel_size),) * self.dimensions

    def _downsample(self, u: jax.Array, features: int) -> jax.Array:
        if self.resample_with_conv:
            return nn.Conv(features, self._kernel(None), strides=2, padding="SAME")(u)
        return nn.Conv(features, (1,) * self.dimensions)(_fir(u, self.fir_kernel, 2))

    def _upsample(self, u: jax.Array, features: int) -> jax.Array:
        if self.resample_with_conv:
            return nn.ConvTranspose(features, self._kernel(None), strides=(2,) * self.dimensions, padding="SAME")(u)
        for axis in range(1, 1 + self.dimensions):
            u = jnp.repeat(u, 2, axis=axis)
        return nn.Conv(features, (1,) * self.dimensions)(_fir(u, self.fir_kernel, 1))

    def _inputs(self, x: jax.Array, y: jax.Array, score: jax.Array) -> jax.Array:
        inputs = [x, score]
        if self.condition_on_observation:
            grid = x.shape[:-1]
            y = y[..., None] if y.shape == grid else y
            if y.shape[:-1] != grid:
                raise ValueError(
                    f"`condition_on_observation` needs y on the grid of x {grid} (optionally with channels), "
                    f"but one y has shape {y.shape}"
                )
            inputs.append(y)
        return jnp.concatenate(inputs, -1)[None]

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array, score: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        act = activation(self.activation)
        u = act(nn.Conv(self.nf, self._kernel(self.input_kernel_size), padding="SAME")(self._inputs(x, y, score)))
        widths, skips = [], []
        for multiplier in self.ch_mult:
            for _ in range(self.num_layers):
                u = act(nn.Conv(u.shape[-1], self._kernel(None), padding="SAME")(u))
            skips.append(u)
            widths.append(u.shape[-1])
            u = self._downsample(u, u.shape[-1] * multiplier)
        u, h = GRUBlock(self.hidden_units, self.kernel_size, self.conv_kernel_size or self.kernel_size)(u, h[None])
        for width, skip in zip(reversed(widths), reversed(skips)):
            u = act(self._upsample(u, width))
            if self.skip_connections:
                u = jnp.concatenate([u, skip], -1) if self.combine_method == "cat" else u + skip
            for layer in range(self.num_layers):
                u = nn.Conv(width, self._kernel(None), padding="SAME")(u)
                u = act(u) if layer < self.num_layers - 1 else u
        return nn.Conv(self.channels, (1,) * self.dimensions)(u)[0], h[0]

    def initialize_hidden_states(self, dimensions: tuple[int, ...]) -> jax.Array:
        """float(*dimensions / 2**len(ch_mult), hidden_units) zeros for one instance."""
        dimensions = tuple(dimensions)
        factor = 2 ** len(self.ch_mult)
        if len(dimensions) != self.dimensions or any(d % factor for d in dimensions):
            raise ValueError(
                f"{type(self).__name__}(dimensions={self.dimensions}, ch_mult={self.ch_mult}) needs "
                f"{self.dimensions} spatial sizes divisible by 2**{len(self.ch_mult)} = {factor}, "
                f"but `dimensions` is {dimensions}"
            )
        return jnp.zeros((*(d // factor for d in dimensions), self.hidden_units))

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return hyperparameters(self)


class Unet(Hourglass):
    """:class:`Hourglass` with skip connections: each decoder level joins the encoder's output
    of the same level (``combine_method``: concatenated or summed) before its convs."""

    skip_connections: ClassVar[bool] = True

