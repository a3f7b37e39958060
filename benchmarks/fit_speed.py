"""How fast is ``SimulatorIMNN.fit`` compared with a hand-written JAX training loop?

Problem: the Gaussian mean-and-variance simulator of :mod:`imnn.problems`
(10 draws, θ_fid = (0, 1)), n_s = n_d = 1000, n_params = n_summaries = 2, a
3 × 128 LeakyReLU MLP (stax), ``optax.adam(1e-3)``, ``fit(λ=10, ϵ=0.1)``.

Measured in one run:

1. ms per iteration of ``model.fit`` once compiled (timed fits of N iterations
   with ``min_iterations = max_iterations = N``; wall time / N). The whole call
   is timed, so the fixed per-call cost (the Fisher statistics computed at the
   end of ``fit``, host round trips between chunks) is included; the slope
   ``(T(N) − T(n_short)) / (N − n_short)`` that removes it is printed as well.
2. the same for a minimal hand-written reference: one ``jax.jit``-compiled
   ``lax.fori_loop`` doing the same maths per iteration, written here
   independently of imnn (no imnn function is called by it).
3. the ratio imnn / reference (target ≤ 1.05), the compile time of the first
   ``fit`` call, and the wall time and number of XLA compilations of a second,
   identical short ``fit`` call (should be 0: every fit setting is traced).
4. ms per iteration of ``derivative_mode="forward"`` and ``"reverse"``, which is
   what the ``"auto"`` rule in :func:`imnn.sources.simulator_mode` relies on.

Measurements of the different variants are interleaved (the order rotates every
repeat) so that background load does not bias one of them; min and median over
the repeats are reported.

Run:  python benchmarks/fit_speed.py            (about 1–2 minutes on 2 CPU cores)
      python benchmarks/fit_speed.py -n 400 -r 7
      IMNN_BENCH_ITERATIONS=400 IMNN_BENCH_REPEATS=7 python benchmarks/fit_speed.py
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.example_libraries import stax

import imnn
from imnn.problems import GaussianMeanVariance

N_S = N_D = 1000
N_PARAMS = N_SUMMARIES = 2
λ, ϵ = 10.0, 0.1
LEARNING_RATE = 1e-3
WEIGHTS_KEY, FIT_KEY = 0, 1


# --------------------------------------------------------------------- set-up
def network():
    return stax.serial(
        stax.Dense(128), stax.LeakyRelu,
        stax.Dense(128), stax.LeakyRelu,
        stax.Dense(128), stax.LeakyRelu,
        stax.Dense(N_SUMMARIES),
    )  # fmt: skip


def make_imnn(problem: GaussianMeanVariance, mode: str) -> imnn.SimulatorIMNN:
    return imnn.SimulatorIMNN(
        n_s=N_S, n_d=N_D, n_params=N_PARAMS, n_summaries=N_SUMMARIES,
        input_shape=problem.input_shape, θ_fid=problem.θ_fid, model=network(),
        optimiser=optax.adam(LEARNING_RATE), key_or_state=jax.random.key(WEIGHTS_KEY),
        simulator=problem.simulator, derivative_mode=mode, verbose=False,
    )  # fmt: skip


def fit(model: imnn.SimulatorIMNN, n: int) -> float:
    """Wall time of one ``fit`` call of exactly ``n`` iterations."""
    started = time.perf_counter()
    model.fit(
        λ=λ, ϵ=ϵ, rng=jax.random.key(FIT_KEY), patience=10**9,
        min_iterations=n, max_iterations=n, print_rate=None,
    )  # fmt: skip
    jax.block_until_ready((model.state, model.F))
    return time.perf_counter() - started


# ------------------------------------------------------- hand-written baseline
def make_reference(problem: GaussianMeanVariance):
    """A jitted ``(w, opt_state, key, n, λ, α) -> (w, opt_state, key, loss)`` doing n IMNN steps.

    Independent of imnn: summaries of n_s fresh simulations, ``jax.jacfwd`` of
    θ ↦ network(simulator(key, θ)) for the first n_d, the Gaussian Fisher
    statistics, the regularised loss, ``value_and_grad`` and an adam update.
    """
    init_fn, apply_fn = network()
    θ_fid = jnp.asarray(problem.θ_fid, jnp.float32)
    optimiser = optax.adam(LEARNING_RATE)
    identity = jnp.eye(N_SUMMARIES)

    def loss(w, key, λ, α):
        keys = jax.random.split(key, N_S)

        def summary(k, θ):
            return apply_fn(w, problem.simulator(k, θ))

        x = jax.vmap(summary, (0, None))(keys, θ_fid)  # (n_s, n_summaries)
        dx_dθ = jax.vmap(jax.jacfwd(summary, argnums=1), (0, None))(keys[:N_D], θ_fid)  # (n_d, n_summaries, n_params)
        μ = jnp.mean(x, axis=0)
        centred = x - μ
        C = centred.T @ centred / (N_S - 1)
        invC = jnp.linalg.inv(C)
        dμ_dθ = jnp.mean(dx_dθ, axis=0)
        F = dμ_dθ.T @ invC @ dμ_dθ
        Λ2 = jnp.linalg.norm(C - identity) + jnp.linalg.norm(invC - identity)
        r = λ * Λ2 / (Λ2 + jnp.exp(-α * Λ2))
        return -jnp.linalg.slogdet(F)[1] + r * Λ2

    @jax.jit
    def run(w, opt_state, key, n, λ, α):  # λ, α traced, like imnn's fit settings
        def step(_, carry):
            w, opt_state, key, _ = carry
            key, subkey = jax.random.split(key)
            value, grads = jax.value_and_grad(loss)(w, subkey, λ, α)
            updates, opt_state = optimiser.update(grads, opt_state, w)
            return optax.apply_updates(w, updates), opt_state, key, value

        return jax.lax.fori_loop(0, n, step, (w, opt_state, key, jnp.zeros(())))

    return init_fn, optimiser, run


def reference_alpha(λ: float, ϵ: float) -> float:
    return float(-np.log(ϵ * (λ - 1.0) + ϵ**2 / (1.0 + ϵ)) / ϵ)


class Reference:
    """Holds the baseline's state so that, like a model, repeated runs continue training."""

    def __init__(self, problem: GaussianMeanVariance):
        init_fn, self.optimiser, self.run_fn = make_reference(problem)
        self.w0 = init_fn(jax.random.key(WEIGHTS_KEY), problem.input_shape)[1]
        self.reset()
        self.λ = jnp.float32(λ)
        self.α = jnp.float32(reference_alpha(λ, ϵ))

    def reset(self):
        self.w, self.opt_state = self.w0, self.optimiser.init(self.w0)

    def run(self, n: int) -> float:
        started = time.perf_counter()
        out = self.run_fn(self.w, self.opt_state, jax.random.key(FIT_KEY), jnp.int32(n), self.λ, self.α)
        jax.block_until_ready(out)
        elapsed = time.perf_counter() - started
        self.w, self.opt_state = out[0], out[1]
        return elapsed


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


def cache_size(model: imnn.SimulatorIMNN) -> int | str:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--iterations", type=int, default=int(os.environ.get("IMNN_BENCH_ITERATIONS", 200)),
                        help="iterations per timed run (env IMNN_BENCH_ITERATIONS, default 200)")
    parser.add_argument("-r", "--repeats", type=int, default=int(os.environ.get("IMNN_BENCH_REPEATS", 5)),
                        help="timed runs of each variant, interleaved (env IMNN_BENCH_REPEATS, default 5)")
    parser.add_argument("--short", type=int, default=int(os.environ.get("IMNN_BENCH_SHORT", 10)),
                        help="iterations of the short (compile / second) fit calls (default 10)")
    parser.add_argument("--no-reverse", action="store_true", help="skip derivative_mode='reverse'")
    args = parser.parse_args()
    n, repeats, short = args.iterations, args.repeats, args.short
    if n <= short:
        parser.error("--iterations must exceed --short")

    print(f"imnn {imnn.__version__}, jax {jax.__version__}, optax {optax.__version__}, python {platform.python_version()}")
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), host CPUs: {os.cpu_count()}")
    print(f"problem: GaussianMeanVariance (10 draws, θ_fid=(0,1)); n_s=n_d={N_S}; 3×128 MLP; adam({LEARNING_RATE}); "
          f"λ={λ}, ϵ={ϵ}")
    print(f"timed runs: {n} iterations × {repeats} repeats per variant; short fits: {short} iterations\n")

    problem = GaussianMeanVariance()
    counter = CompileCounter()
    modes = ["forward"] + ([] if args.no_reverse else ["reverse"])
    models = {mode: make_imnn(problem, mode) for mode in modes}
    resolved = imnn.sources.simulator_mode("auto", N_PARAMS, N_SUMMARIES)
    print(f"derivative_mode='auto' resolves to {resolved!r} for n_params={N_PARAMS}, n_summaries={N_SUMMARIES}")

    # ---- 1. first and second short fit: compile time, then no recompilation
    print("\n[compilation]")
    first: dict[str, float] = {}
    for mode, model in models.items():
        with counter.counting() as compiled:
            first[mode] = fit(model, short)
        compile_s = sum(d for _, d in compiled)
        print(f"  imnn {mode:8s} first fit({short} it): {first[mode]:6.2f} s wall, "
              f"{len(compiled)} XLA compilations ({compile_s:.2f} s in XLA backend compile)")
    reference = Reference(problem)
    with counter.counting() as compiled:
        reference_first = reference.run(short)
    print(f"  reference       first run({short} it): {reference_first:6.2f} s wall, {len(compiled)} XLA compilations")

    # Same maths? Both started from the same weights and key: compare after `short` steps.
    fwd = models["forward"]
    same_start = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), fwd.initial_w, reference.w0)
    diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), fwd.final_w, reference.w))
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), fwd.final_w, fwd.initial_w))
    print(f"  check: same initial weights: {all(jax.tree.leaves(same_start))}; after {short} steps "
          f"max |w_imnn − w_ref| = {max(diffs):.2e} (weights moved by up to {max(moved):.2e})")

    second: dict[str, float] = {}
    second_compiles: dict[str, int] = {}
    for mode, model in models.items():
        before = cache_size(model)
        with counter.counting() as compiled:
            second[mode] = fit(model, short)
        second_compiles[mode] = len(compiled)
        names = ", ".join(sorted({name for name, _ in compiled})) or "none"
        print(f"  imnn {mode:8s} second fit({short} it): {second[mode] * 1e3:7.1f} ms wall, "
              f"{len(compiled)} XLA compilations ({names}); fit-loop jit cache entries {before} -> {cache_size(model)}")

    # ---- 2. interleaved timed runs
    print(f"\n[timed runs: ms per iteration, {n} iterations each]")
    variants = {f"imnn {mode}": (lambda m=model: fit(m, n)) for mode, model in models.items()}
    variants["reference"] = lambda: reference.run(n)
    short_variants = {f"imnn {mode}": (lambda m=model: fit(m, short)) for mode, model in models.items()}
    short_variants["reference"] = lambda: reference.run(short)
    times: dict[str, list[float]] = {name: [] for name in variants}
    short_times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for repeat in range(repeats):
        order = names[repeat % len(names):] + names[: repeat % len(names)]
        for name in order:
            short_times[name].append(short_variants[name]())
            times[name].append(variants[name]())
        print(f"  repeat {repeat + 1}: " + "   ".join(f"{name} {ms(times[name][-1], n):6.2f}" for name in names))

    per_it = {name: [ms(t, n) for t in times[name]] for name in names}
    slope = {
        name: [1e3 * (t - s) / (n - short) for t, s in zip(times[name], short_times[name])] for name in names
    }  # fixed per-call cost removed
    ratios = [a / b for a, b in zip(per_it["imnn forward"], per_it["reference"])]
    slope_ratios = [a / b for a, b in zip(slope["imnn forward"], slope["reference"])]

    # ---- 3. table
    print("\n" + "=" * 92)
    print(f"{'variant':26s} {'ms/it (wall/N)':>24s} {'ms/it (slope, fixed cost removed)':>38s}")
    print("-" * 92)
    for name in names:
        label = name + (" (= auto)" if name == f"imnn {resolved}" else "")
        print(f"{label:26s} {summary(per_it[name]):>24s}   {summary(slope[name]):>34s}")
    print("-" * 92)
    ratio_min = min(per_it["imnn forward"]) / min(per_it["reference"])
    print(f"ratio imnn forward / reference (wall/N): median of paired {statistics.median(ratios):.3f}, "
          f"of minima {ratio_min:.3f}   (target ≤ 1.05)")
    print(f"ratio imnn forward / reference (slope):  median of paired {statistics.median(slope_ratios):.3f}")
    if "imnn reverse" in per_it:
        rev_fwd = statistics.median(per_it["imnn reverse"]) / statistics.median(per_it["imnn forward"])
        print(f"derivative modes: reverse / forward = {rev_fwd:.2f}× (median)  -> 'auto' picks {resolved!r}")
    for mode in modes:
        fixed = statistics.median(short_times[f"imnn {mode}"]) * 1e3 - short * statistics.median(slope[f"imnn {mode}"])
        print(f"imnn {mode}: first fit (compile + {short} it) {first[mode]:.2f} s; second fit({short} it) "
              f"{second[mode] * 1e3:.1f} ms with {second_compiles[mode]} compilations; "
              f"fixed per-call cost ≈ {fixed:.1f} ms")
    print(f"reference: first run (compile + {short} it) {reference_first:.2f} s")
    print("=" * 92)


if __name__ == "__main__":
    sys.exit(main())
