"""The Recurrent Inference Machine's maths as pure functions of one instance.

A RIM solves ``y = F(x) + η`` iteratively in a *model space* ``z`` with ``x = ψ(z)``
(``ψ`` the link function). Starting from ``z₀`` and a hidden state ``h₀ = 0``, each of
its ``T`` steps

1. takes the likelihood score in model space, ``sₜ = J_ψ(zₜ)ᵀ ∇ₓ log p(y | ψ(zₜ))``,
   with no training gradient through it;
2. preprocesses it, ``ŝₜ = Pₜ(sₜ)`` (identity, arcsinh, Adam or RMSProp moments);
3. lets the network propose an update, ``(Δₜ, hₜ₊₁) = f_θ(zₜ, y, ŝₜ, hₜ)``;
4. steps, ``zₜ₊₁ = zₜ + Δₜ``.

Training minimises ``Σₜ wₜ ‖zₜ − ψ⁻¹(x_true)‖²`` (mean over the batch), whose
minimiser is the posterior mean. Everything here acts on ONE instance; the
:class:`imnn.rim.RIM` class vmaps it over the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

PREPROCESSING = ("identity", "arcsinh", "adam", "rmsprop")
INITIALISATION = ("zeros", "approximate_inverse", "model")
TIME_WEIGHTS = ("uniform", "linear", "quadratic")


class Config(NamedTuple):
    """The static configuration of a RIM's iterations.

    Attributes:
        T: number of steps.
        preprocessing: one of ``PREPROCESSING``.
        initialization: one of ``INITIALISATION``.
        epsilon, beta_1, beta_2: the Adam/RMSProp preprocessing constants.
    """

    T: int
    preprocessing: str
    initialization: str
    epsilon: float
    beta_1: float
    beta_2: float


class Moments(NamedTuple):
    """Running first and second moments of the score (Adam/RMSProp preprocessing), shaped like ``z``."""

    mean: jax.Array
    variance: jax.Array


def model_space_score(score_fn: Callable, link: Callable) -> Callable:
    """``score(z, y, *args) = J_ψ(z)ᵀ score_fn(ψ(z), y, *args)``: the chain rule through the link,
    with the gradient stopped (the RIM learns from the score, not through it)."""

    def score(z, y, *args):
        x, pullback = jax.vjp(link, z)
        return jax.lax.stop_gradient(pullback(score_fn(x, y, *args))[0])

    return score


def preprocess(config: Config, score: jax.Array, t: jax.Array, moments: Moments) -> tuple[jax.Array, Moments]:
    """``(ŝₜ, moments)`` for step ``t`` (0-based).

    - ``identity``: ``ŝ = s``; ``arcsinh``: ``ŝ = arcsinh(s)``;
    - ``adam``: ``m ← β₁m + (1−β₁)s``, ``v ← β₂v + (1−β₂)s²``,
      ``ŝ = m̂ / (√v̂ + ε)`` with the bias corrections ``m̂ = m/(1−β₁ᵗ⁺¹)``, ``v̂ = v/(1−β₂ᵗ⁺¹)``;
    - ``rmsprop``: the same ``v``, ``ŝ = s / (√v̂ + ε)`` (torch_rim never updates ``v`` and
      returns ``s/ε``).
    """
    method, β1, β2, ε = config.preprocessing, config.beta_1, config.beta_2, config.epsilon
    if method == "identity":
        return score, moments
    if method == "arcsinh":
        return jnp.arcsinh(score), moments
    mean = β1 * moments.mean + (1 - β1) * score
    variance = β2 * moments.variance + (1 - β2) * score**2
    scale = jnp.sqrt(variance / (1 - β2 ** (t + 1))) + ε
    numerator = mean / (1 - β1 ** (t + 1)) if method == "adam" else score
    return numerator / scale, Moments(mean, variance)


def iterate(
    config: Config,
    step_fn: Callable[[jax.Array, jax.Array, jax.Array, Any], tuple[jax.Array, Any]],
    score: Callable,
    z0: jax.Array,
    h0: Any,
    y: jax.Array,
    args: tuple,
) -> jax.Array:
    """The ``T`` iterates ``z₁ … z_T`` from ``z₀``: float(T, *z.shape).

    ``step_fn(z, y, ŝ, h) -> (Δ, h')`` is the network with its parameters bound.
    """
    zeros = jnp.zeros_like(z0)

    def step(carry, t):
        z, h, moments = carry
        ŝ, moments = preprocess(config, score(z, y, *args), t, moments)
        Δ, h = step_fn(z, y, ŝ, h)
        z = z + Δ
        return (z, h, moments), z

    # XLA:CPU compiles a convolution's gradient 10× slower inside a loop (see engine.LOOP_HOSTILE_ON_CPU):
    # unrolled, the T steps train as fast as hand-written code there; other backends keep the loop.
    unroll = jax.default_backend() == "cpu"
    _, zs = jax.lax.scan(step, (z0, h0, Moments(zeros, zeros)), jnp.arange(config.T), unroll=unroll)
    return zs


def time_weights(weights: Any, n_steps: int) -> jax.Array:
    """The loss's per-step weights wₜ, float(n_steps).

    ``None``: all ones (torch_rim's loss, a plain sum over steps); ``"uniform"``: 1/n;
    ``"linear"``: 2(t+1)/(n(n+1)); ``"quadratic"``: 6(t+1)²/(n(n+1)(2n+1)) (each sums to
    one and weighs late steps more); or an array of ``n_steps`` weights.
    """
    t = jnp.arange(1, n_steps + 1, dtype=jnp.float32)
    if weights is None:
        return jnp.ones(n_steps, jnp.float32)
    if isinstance(weights, str):
        method = weights.lower()
        if method == "uniform":
            return jnp.full(n_steps, 1 / n_steps, jnp.float32)
        if method == "linear":
            return 2 * t / (n_steps * (n_steps + 1))
        if method == "quadratic":
            return 6 * t**2 / (n_steps * (n_steps + 1) * (2 * n_steps + 1))
        raise ValueError(f"`time_weights` should be one of {TIME_WEIGHTS}, an array or None, but is {weights!r}")
    weights = jnp.asarray(weights, jnp.float32)
    if weights.shape != (n_steps,):
        raise ValueError(
            f"`time_weights` should have shape ({n_steps},), one weight per iterate, but has shape {weights.shape}"
        )
    return weights


def loss(zs: jax.Array, z_true: jax.Array, weights: jax.Array) -> jax.Array:
    """``Σₜ wₜ ‖zₜ − z_true‖²`` for one instance: ``zs`` float(T, *z.shape), ``weights`` float(T)."""
    squared = jnp.sum((zs - z_true) ** 2, axis=tuple(range(1, zs.ndim)))
    return jnp.sum(weights * squared)
