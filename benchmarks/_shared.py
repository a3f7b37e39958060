"""Helpers shared by the speed benchmarks: the 3 × 128 MLP, a timed fit, an XLA compile counter."""

from __future__ import annotations

import contextlib
import statistics
import time

import jax
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
