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

The timed runs of the variants are short and interleaved in ABBA order (imnn
forward in the middle, back to back with the reference and with reverse mode)
so that background load does not bias one of them; min and median over the
repeats are reported, and ratios are medians of per-repeat ratios (the paired
ratio is the robust figure on a shared machine; minima are not paired).

Run:  python benchmarks/fit_speed.py     (~45 s on 2 idle CPU cores, ~1.5 min when they are shared)
      python benchmarks/fit_speed.py -n 200 -r 20
      IMNN_BENCH_ITERATIONS=200 IMNN_BENCH_REPEATS=20 python benchmarks/fit_speed.py
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _shared import CompileCounter, cache_size, fit, ms, network, reference_loss, summary

import imnn
from imnn.problems import GaussianMeanVariance

N_S = N_D = 1000
N_PARAMS = N_SUMMARIES = 2
λ, ϵ = 10.0, 0.1
LEARNING_RATE = 1e-3
WEIGHTS_KEY, FIT_KEY = 0, 1


# --------------------------------------------------------------------- set-up
def make_imnn(problem: GaussianMeanVariance, mode: str) -> imnn.SimulatorIMNN:
    return imnn.SimulatorIMNN(
        n_s=N_S, n_d=N_D, n_params=N_PARAMS, n_summaries=N_SUMMARIES,
        input_shape=problem.input_shape, θ_fid=problem.θ_fid, model=network(),
        optimiser=optax.adam(LEARNING_RATE), key_or_state=jax.random.key(WEIGHTS_KEY),
        simulator=problem.simulator, derivative_mode=mode, verbose=False,
    )  # fmt: skip


# ------------------------------------------------------- hand-written baseline
def make_reference(problem: GaussianMeanVariance):
    """A jitted ``(w, opt_state, key, n, λ, α) -> (w, opt_state, key, loss)`` doing n IMNN steps.

    Independent of imnn: summaries of n_s fresh simulations, ``jax.jacfwd`` of
    θ ↦ network(simulator(key, θ)) for the first n_d, the Gaussian Fisher
    statistics, the regularised loss, ``value_and_grad`` and an adam update.
    """
    init_fn, apply_fn = network()
    optimiser = optax.adam(LEARNING_RATE)
    loss = reference_loss(apply_fn, problem.simulator, problem.θ_fid, N_S, N_D, N_SUMMARIES)

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
        self.w, self.opt_state, self.last_loss = out[0], out[1], float(out[3])
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "-n",
        "--iterations",
        type=int,
        default=int(os.environ.get("IMNN_BENCH_ITERATIONS", 100)),
        help="iterations per timed run (env IMNN_BENCH_ITERATIONS, default 100)",
    )
    parser.add_argument(
        "-r",
        "--repeats",
        type=int,
        default=int(os.environ.get("IMNN_BENCH_REPEATS", 16)),
        help="timed runs of each variant, interleaved (env IMNN_BENCH_REPEATS, default 16)",
    )
    parser.add_argument(
        "--short",
        type=int,
        default=int(os.environ.get("IMNN_BENCH_SHORT", 10)),
        help="iterations of the short (compile / second) fit calls (default 10)",
    )
    parser.add_argument("--no-reverse", action="store_true", help="skip derivative_mode='reverse'")
    args = parser.parse_args()
    n, repeats, short = args.iterations, args.repeats, args.short
    if n <= short:
        parser.error("--iterations must exceed --short")

    versions = f"imnn {imnn.__version__}, jax {jax.__version__}, optax {optax.__version__}"
    print(f"{versions}, python {platform.python_version()}")
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), host CPUs: {os.cpu_count()}")
    print(
        f"problem: GaussianMeanVariance (10 draws, θ_fid=(0,1)); n_s=n_d={N_S}; 3×128 MLP; adam({LEARNING_RATE}); "
        f"λ={λ}, ϵ={ϵ}"
    )
    print(f"timed runs: {n} iterations × {repeats} repeats per variant; short fits: {short} iterations")
    print("load average (1, 5, 15 min) at start: {:.2f} {:.2f} {:.2f}\n".format(*os.getloadavg()))

    problem = GaussianMeanVariance()
    counter = CompileCounter()
    modes = ["forward"] + ([] if args.no_reverse else ["reverse"])
    models = {mode: make_imnn(problem, mode) for mode in modes}
    resolved = imnn.sources.simulator_mode("auto", N_PARAMS, N_SUMMARIES, math.prod(problem.input_shape))
    print(f"derivative_mode='auto' resolves to {resolved!r} for n_params={N_PARAMS}, n_summaries={N_SUMMARIES}")

    # ---- 1. first and second short fit: compile time, then no recompilation
    print("\n[compilation]")
    first: dict[str, float] = {}
    for mode, model in models.items():
        with counter.counting() as compiled:
            first[mode] = fit(model, short)
        compile_s = sum(d for _, d in compiled)
        slowest = ", ".join(f"{name} {d:.2f} s" for name, d in sorted(compiled, key=lambda e: -e[1])[:2])
        print(
            f"  imnn {mode:8s} first fit({short} it): {first[mode]:6.2f} s wall, {len(compiled)} XLA compilations "
            f"taking {compile_s:.2f} s (slowest: {slowest})"
        )
    reference = Reference(problem)
    with counter.counting() as compiled:
        reference_first = reference.run(short)
    print(f"  reference       first run({short} it): {reference_first:6.2f} s wall, {len(compiled)} XLA compilations")

    # Same maths? Both started from the same weights and key; compare after `short` steps.
    # The output-layer bias is left out of the weight comparison: the loss does not depend
    # on a shift of the summaries, so its gradient is rounding noise (~1e-5) that adam
    # turns into ±learning-rate steps, and it differs between any two implementations.
    fwd = models["forward"]
    h = fwd.history
    imnn_loss = float(-np.log(h["detF"][-1]) + h["r"][-1] * h["Λ2"][-1])  # loss of the last iteration

    def max_abs_diff(tree_a, tree_b) -> list[float]:
        return [float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b))]

    same_start = max(max_abs_diff(fwd.initial_w, reference.w0)) == 0
    diff = max_abs_diff(fwd.final_w, reference.w)
    moved = max_abs_diff(fwd.final_w, fwd.initial_w)
    print(
        f"  check (same maths): same initial weights {same_start}; loss at iteration {short}: imnn {imnn_loss:.6g}, "
        f"reference {reference.last_loss:.6g}; max |w_imnn − w_ref| {max(diff[:-1]):.1e} "
        f"(weights moved up to {max(moved[:-1]):.1e}; output bias left out)"
    )

    second: dict[str, float] = {}
    second_compiles: dict[str, int] = {}
    for mode, model in models.items():
        before = cache_size(model)
        with counter.counting() as compiled:
            second[mode] = fit(model, short)
        second_compiles[mode] = len(compiled)
        names = ", ".join(sorted({name for name, _ in compiled})) or "none"
        print(
            f"  imnn {mode:8s} second fit({short} it): {second[mode] * 1e3:7.1f} ms wall, "
            f"{len(compiled)} XLA compilations ({names}); fit-loop jit cache entries {before} -> {cache_size(model)}"
        )

    # Other settings are traced too: a call with different λ, ϵ, patience and limits must not compile.
    model = models["forward"]
    before = cache_size(model)
    with counter.counting() as compiled:
        started = time.perf_counter()
        model.fit(λ=5.0, ϵ=0.05, rng=jax.random.key(FIT_KEY + 1), patience=3, min_iterations=2,
                  max_iterations=short, best=False)  # fmt: skip
        other = time.perf_counter() - started
    other_compiles = len(compiled)
    print(
        f"  imnn forward  fit with other settings (λ=5, ϵ=0.05, patience=3, ≤{short} it): {other * 1e3:.1f} ms, "
        f"{other_compiles} XLA compilations; fit-loop jit cache entries {before} -> {cache_size(model)}"
    )

    # ---- 2. interleaved timed runs
    print(f"\n[timed runs: ms per iteration, {n} iterations each]")
    variants = {f"imnn {mode}": (lambda m=model: fit(m, n)) for mode, model in models.items()}
    variants["reference"] = lambda: reference.run(n)
    short_variants = {f"imnn {mode}": (lambda m=model: fit(m, short)) for mode, model in models.items()}
    short_variants["reference"] = lambda: reference.run(short)
    times: dict[str, list[float]] = {name: [] for name in variants}
    short_times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    # ABBA order with imnn forward in the middle: it is always timed back to back with the
    # reference and with reverse mode (ratios are taken per repeat), and a linear drift in
    # background load cancels over two repeats.
    abba = ["reference", "imnn forward"] + [name for name in names if name not in ("imnn forward", "reference")]
    for repeat in range(repeats):
        order = abba if repeat % 2 == 0 else abba[::-1]
        for name in order:
            short_times[name].append(short_variants[name]())
            times[name].append(variants[name]())
        print(f"  repeat {repeat + 1}: " + "   ".join(f"{name} {ms(times[name][-1], n):6.2f}" for name in names))

    per_it = {name: [ms(t, n) for t in times[name]] for name in names}
    slope = {
        name: [1e3 * (t - s) / (n - short) for t, s in zip(times[name], short_times[name])] for name in names
    }  # fixed per-call cost removed

    # ---- 3. table
    print("\n" + "=" * 92)
    print(f"{'variant':26s} {'ms/it (wall/N)':>24s} {'ms/it (slope, fixed cost removed)':>38s}")
    print("-" * 92)
    for name in names:
        label = name + (" (= auto)" if name == f"imnn {resolved}" else "")
        print(f"{label:26s} {summary(per_it[name]):>24s}   {summary(slope[name]):>34s}")
    print("-" * 92)

    def paired(name_a: str, name_b: str, table: dict[str, list[float]]) -> str:
        q1, q2, q3 = np.percentile([a / b for a, b in zip(table[name_a], table[name_b])], [25, 50, 75])
        return f"{q2:.3f}  (interquartile {q1:.3f}–{q3:.3f})"

    print(f"ratio imnn forward / reference, wall/N: {paired('imnn forward', 'reference', per_it)}   target ≤ 1.05")
    print(f"ratio imnn forward / reference, slope:  {paired('imnn forward', 'reference', slope)}")
    if "imnn reverse" in per_it:
        print(
            f"ratio imnn reverse / imnn forward:      {paired('imnn reverse', 'imnn forward', per_it)}   "
            f"('auto' picks {resolved!r} here)"
        )
    print("-" * 92)
    print(f"{'compilation':26s} {'first fit(' + str(short) + ' it)':>18s} {'second fit':>12s} "
          f"{'≈ compile':>10s} {'compiles in 2nd':>16s} {'fixed cost/call':>16s}")  # fmt: skip
    for mode in modes:
        name = f"imnn {mode}"
        fixed = statistics.median(short_times[name]) * 1e3 - short * statistics.median(slope[name])
        print(
            f"{name:26s} {first[mode]:16.2f} s {second[mode] * 1e3:9.1f} ms {first[mode] - second[mode]:8.2f} s "
            f"{second_compiles[mode]:16d} {fixed:13.1f} ms"
        )
    print(f"{'reference':26s} {reference_first:16.2f} s")
    print(f"imnn forward fit with other settings (λ, ϵ, patience, limits): {other_compiles} compilations")
    print("load average (1, 5, 15 min) at end:   {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print("=" * 92)


if __name__ == "__main__":
    sys.exit(main())
