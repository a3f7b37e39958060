"""Helpers shared by the speed benchmarks: the 3 × 128 MLP, a timed fit, a reference loss, an XLA compile counter."""

from __future__ import annotations

import contextlib
import statistics
import time

import jax
import jax.numpy as jnp
from jax.example_libraries import stax

import imnn

N_SUMMARIES = 2
λ, ϵ = 10.0, 0.1
FIT_KEY = 1


def network():
    return stax.serial(
        stax.Dense(128), stax.LeakyRelu,
        stax.Dense(128), stax.LeakyRelu,
        stax.Dense(128), stax.LeakyRelu,
        stax.Dense(N_SUMMARIES),
    )  # fmt: skip


def fit(model: imnn.IMNNBase, n: int) -> float:
    """Wall time of one ``fit`` call of exactly ``n`` iterations."""
    started = time.perf_counter()
    model.fit(
        λ=λ, ϵ=ϵ, rng=jax.random.key(FIT_KEY), patience=10**9,
        min_iterations=n, max_iterations=n, print_rate=None,
    )  # fmt: skip
    jax.block_until_ready((model.state, model.F))
    return time.perf_counter() - started


def reference_loss(apply_fn, simulator, θ_fid, n_s: int, n_d: int, n_summaries: int):
    """``loss(w, key, λ, α)`` of a simulator IMNN, written here independently of imnn.

    Summaries of ``n_s`` fresh simulations, ``jax.jacfwd`` of θ ↦ network(simulator(key, θ))
    for the first ``n_d``, the Gaussian Fisher statistics and the regularised loss.
    """
    θ_fid = jnp.asarray(θ_fid, jnp.float32)
    identity = jnp.eye(n_summaries)

    def loss(w, key, λ, α):
        keys = jax.random.split(key, n_s)

        def summary(k, θ):
            return apply_fn(w, simulator(k, θ))

        def twice(θ, k):
            x = summary(k, θ)
            return x, x

        # jacfwd with the value as auxiliary output, so the primal pass is shared with the
        # tangents. (Computing x separately, by a second vmap(summary) or a second call of
        # `summary` in `twice`, is 13–17 % slower per iteration on CPU: XLA does not merge
        # the duplicated network pass.)
        value_and_jacobian = jax.jacfwd(twice, has_aux=True)
        dx_dθ, x_d = jax.vmap(value_and_jacobian, (None, 0))(θ_fid, keys[:n_d])  # (n_d, n_summaries, n_params)
        x = jnp.concatenate([x_d, jax.vmap(summary, (0, None))(keys[n_d:], θ_fid)])  # (n_s, n_summaries)
        μ = jnp.mean(x, axis=0)
        centred = x - μ
        C = centred.T @ centred / (n_s - 1)
        invC = jnp.linalg.inv(C)
        dμ_dθ = jnp.mean(dx_dθ, axis=0)
        F = dμ_dθ.T @ invC @ dμ_dθ
        Λ2 = jnp.linalg.norm(C - identity) + jnp.linalg.norm(invC - identity)
        r = λ * Λ2 / (Λ2 + jnp.exp(-α * Λ2))
        return -jnp.linalg.slogdet(F)[1] + r * Λ2

    return loss


# ------------------------------------------------------------ compile counter
class CompileCounter:
    """Counts XLA backend compilations (any function) via jax.monitoring."""

    def __init__(self):
        self.events: list[tuple[str, float]] = []
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event: str, duration: float, **kwargs) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            self.events.append((str(kwargs.get("fun_name", "?")), duration))

    @contextlib.contextmanager
    def counting(self):
        start = len(self.events)
        found: list[tuple[str, float]] = []
        yield found
        found.extend(self.events[start:])


def cache_size(model: imnn.IMNNBase) -> int | str:
    """Entries in the jit cache of the model's fit loop (a private attribute: best effort)."""
    try:
        return model._chunk._cache_size()
    except AttributeError:
        return "n/a"


# ----------------------------------------------------------------- reporting
def ms(seconds: float, n: int) -> float:
    return 1e3 * seconds / n


def summary(values: list[float]) -> str:
    return f"min {min(values):7.2f}   median {statistics.median(values):7.2f}"
