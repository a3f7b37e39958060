"""How much slower is an aggregated IMNN than its in-memory counterpart when the data fits in memory?

Problem: the Gaussian mean-and-variance problem of :mod:`imnn.problems` (10 draws,
θ_fid = (0, 1)), n_s = n_d = 1000, n_params = n_summaries = 2, a 3 × 128
LeakyReLU MLP (stax), ``optax.adam(1e-3)``, ``fit(λ=10, ϵ=0.1)``.

Two families are timed, each in-memory class against its aggregated class with
``host=jax.devices()[0], devices=jax.devices()`` and a few ``n_per_device``
(default 100 and ``ceil(n_s / n_devices)``, i.e. many small batches and one batch):

- ``GradientIMNN`` vs ``AggregatedGradientIMNN`` on stored simulations
  (``PROBLEM.simulations(key, n_s, n_d)``: fiducial and exact derivatives);
- ``SimulatorIMNN`` vs ``AggregatedSimulatorIMNN`` (fresh simulations every iteration;
  the aggregated class regenerates each batch in pass 2 from the same keys).

Measured in one run:

1. compilation: wall time and number of XLA compilations of a first short ``fit``;
   the number of compilations of a second identical ``fit``, of a ``fit`` with other
   settings (λ, ϵ, patience, limits) and of all the timed fits together (chunks of
   varying length) — all three should be 0. XLA compilations are counted with a
   ``jax.monitoring`` listener, as in ``benchmarks/fit_speed.py``.
2. same maths: the largest relative difference of |F| between each aggregated model and
   its in-memory counterpart over the iterations of the first short fit (same weights,
   same keys).
3. ms per iteration once compiled: timed fits of N iterations
   (``min_iterations = max_iterations = N``), wall time / N, and the slope
   ``(T(N) − T(n_short)) / (N − n_short)`` that removes the fixed per-call cost
   (the statistics pass at the end of ``fit``).
4. the ratio aggregated / in-memory (target ≤ 2.0 when the data fit in memory: pass 2
   recomputes the forward pass and its tangents). Within each family the runs are interleaved
   with the in-memory model in the middle — ``agg A, in-memory, agg B`` then the
   reverse (ABBA) — so that each aggregated run is back to back with an in-memory
   one; ratios are medians (interquartile range) of per-repeat ratios.

Reading the ratios on CPU: XLA:CPU runs an operation on a few hundred rows (a 100 × 128
matmul) on one thread, and splits it over the cores only from about 1000 rows, so batches
of ``n_per_device=100`` forgo the second core that the in-memory classes (1000 rows) use:
on 2 cores the ratio at 100 is ~2.0, while under ``taskset -c 0`` (one core, both on one
thread) it is 1.1–1.3, the real cost of the second pass. Larger batches, or one host device
per core (``--devices``), recover the cores. With a single batch (``n_per_device`` ≥ n_s)
the loops have one trip and XLA apparently shares pass 1 with pass 2 (the gradient family
then costs the same as in memory and its |F| history is bit-identical).

Several devices: ``--devices 2`` re-executes the script with
``XLA_FLAGS=--xla_force_host_platform_device_count=2`` (set before jax is imported),
so the aggregated classes split each batch over two CPU "devices"; the in-memory
classes run on device 0. On a 2-core machine this helps only the small batches (each
device's share runs on its own core); large ones already use both cores on one device.

Run:  python benchmarks/aggregated_speed.py              (~1.5 min on 2 idle CPU cores)
      python benchmarks/aggregated_speed.py --devices 2
      python benchmarks/aggregated_speed.py -n 200 -r 12 --n-per-device 50,100,250,1000
      IMNN_BENCH_ITERATIONS=200 IMNN_BENCH_REPEATS=12 python benchmarks/aggregated_speed.py
"""

from __future__ import annotations

import argparse
import os
import sys

DEVICE_FLAG = "--xla_force_host_platform_device_count"


def _reexec_with_devices() -> None:
    """With ``--devices N`` (N > 1), restart with N host devices: XLA_FLAGS must be set before jax is imported."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--devices", type=int, default=1)
    wanted = parser.parse_known_args()[0].devices
    flags = os.environ.get("XLA_FLAGS", "")
    if wanted > 1 and DEVICE_FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {DEVICE_FLAG}={wanted}".strip()
        os.execv(sys.executable, [sys.executable, *sys.argv])


_reexec_with_devices()

import math  # noqa: E402
import platform  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from _shared import CompileCounter, cache_size, fit, ms, network, summary  # noqa: E402

import imnn  # noqa: E402
from imnn.problems import GaussianMeanVariance  # noqa: E402

PROBLEM = GaussianMeanVariance()
N_S = N_D = 1000
N_PARAMS = N_SUMMARIES = 2
λ, ϵ = 10.0, 0.1
LEARNING_RATE = 1e-3
WEIGHTS_KEY, FIT_KEY, DATA_KEY = 0, 1, 2


# --------------------------------------------------------------------- set-up
def common() -> dict:
    return dict(
        n_s=N_S, n_d=N_D, n_params=N_PARAMS, n_summaries=N_SUMMARIES, input_shape=PROBLEM.input_shape,
        θ_fid=PROBLEM.θ_fid, model=network(), optimiser=optax.adam(LEARNING_RATE),
        key_or_state=jax.random.key(WEIGHTS_KEY), verbose=False,
    )  # fmt: skip


def aggregation(n_per_device: int) -> dict:
    return dict(host=jax.devices()[0], devices=jax.devices(), n_per_device=n_per_device)


def make_models(n_per_device: list[int]) -> dict[str, dict[str, imnn.IMNNBase]]:
    """{family: {variant name: model}}; the in-memory model is listed first in each family."""
    sims = PROBLEM.simulations(jax.random.key(DATA_KEY), N_S, N_D)
    stored = dict(fiducial=sims.fiducial, derivative=sims.derivative)
    gradient = {"GradientIMNN": imnn.GradientIMNN(**common(), **stored)}
    simulator = {"SimulatorIMNN": imnn.SimulatorIMNN(**common(), simulator=PROBLEM.simulator)}
    for n in n_per_device:
        gradient[f"Aggregated… n_per_device={n}"] = imnn.AggregatedGradientIMNN(**common(), **stored, **aggregation(n))
        simulator[f"Aggregated… n_per_device={n}"] = imnn.AggregatedSimulatorIMNN(
            **common(), simulator=PROBLEM.simulator, **aggregation(n)
        )
    return {"gradient": gradient, "simulator": simulator}


def paired(a: list[float], b: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = np.percentile([x / y for x, y in zip(a, b)], [25, 50, 75])
    return q1, q2, q3


def parse_sizes(text: str, n_devices: int) -> list[int]:
    sizes = []
    for part in text.split(","):
        part = part.strip()
        sizes.append(-(-N_S // n_devices) if part == "full" else int(part))
    if any(n <= 0 for n in sizes):
        raise ValueError(f"--n-per-device must list positive integers or 'full', got {text!r}")
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "-n", "--iterations", type=int, default=int(os.environ.get("IMNN_BENCH_ITERATIONS", 100)),
        help="iterations per timed run (env IMNN_BENCH_ITERATIONS, default 100)",
    )  # fmt: skip
    parser.add_argument(
        "-r", "--repeats", type=int, default=int(os.environ.get("IMNN_BENCH_REPEATS", 8)),
        help="timed runs of each variant, interleaved (env IMNN_BENCH_REPEATS, default 8)",
    )  # fmt: skip
    parser.add_argument(
        "--short", type=int, default=int(os.environ.get("IMNN_BENCH_SHORT", 10)),
        help="iterations of the short (compile / second / slope) fit calls (default 10)",
    )  # fmt: skip
    parser.add_argument(
        "--n-per-device", default=os.environ.get("IMNN_BENCH_N_PER_DEVICE", "100,full"),
        help="comma-separated n_per_device of the aggregated models; 'full' = ceil(n_s / n_devices), one batch "
        "(env IMNN_BENCH_N_PER_DEVICE, default '100,full')",
    )  # fmt: skip
    parser.add_argument(
        "--devices", type=int, default=1,
        help=f"number of host CPU devices (re-executes with XLA_FLAGS={DEVICE_FLAG}=N; default 1)",
    )  # fmt: skip
    args = parser.parse_args()
    n, repeats, short = args.iterations, args.repeats, args.short
    if n <= short:
        parser.error("--iterations must exceed --short")
    n_devices = len(jax.devices())
    sizes = parse_sizes(args.n_per_device, n_devices)

    print(f"imnn {imnn.__version__}, jax {jax.__version__}, optax {optax.__version__}, "
          f"python {platform.python_version()}")  # fmt: skip
    print(f"devices: {n_devices} × {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"host CPUs: {os.cpu_count()}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")  # fmt: skip
    print(f"problem: GaussianMeanVariance (10 draws, θ_fid=(0,1)); n_s=n_d={N_S}; 3×128 MLP; adam({LEARNING_RATE}); "
          f"λ={λ}, ϵ={ϵ}")  # fmt: skip
    for size in sizes:
        batch = size * n_devices
        batches = math.ceil(N_S / batch)
        print(f"n_per_device={size}: batches of {batch} = {n_devices} device(s) × {size}; {batches} batch(es), "
              f"{batches * batch - N_S} padded simulation(s) per pass")  # fmt: skip
    print(f"timed runs: {n} iterations × {repeats} repeats per variant; short fits: {short} iterations")
    print("load average (1, 5, 15 min) at start: {:.2f} {:.2f} {:.2f}\n".format(*os.getloadavg()))

    counter = CompileCounter()
    families = make_models(sizes)
    in_memory = {family: next(iter(models)) for family, models in families.items()}

    # ---- 1. compilation, and the same maths
    print("[compilation: first fit, then a second identical fit]")
    first: dict[tuple[str, str], tuple[float, int, float]] = {}
    for family, models in families.items():
        for name, model in models.items():
            with counter.counting() as compiled:
                wall = fit(model, short)
            first[family, name] = (wall, len(compiled), sum(d for _, d in compiled))
            print(f"  {family:9s} {name:30s} first fit({short} it): {wall:6.2f} s wall, {len(compiled):2d} XLA "
                  f"compilations taking {first[family, name][2]:.2f} s")  # fmt: skip
    # Same maths: the |F| of every iteration of the first fit (same weights, same keys), relative to the
    # in-memory one. (Weights are not compared: biases that only shift the summaries, or leaky-ReLU units
    # that keep one sign over the whole data set, get gradients that are rounding noise, which adam turns
    # into ±learning-rate steps, so they differ between any two evaluation orders.)
    same: dict[tuple[str, str], float] = {}
    for family, models in families.items():
        reference = models[in_memory[family]].history["detF"]
        for name, model in models.items():
            if name != in_memory[family]:
                same[family, name] = float(np.max(np.abs(model.history["detF"] / reference - 1)))

    second: dict[tuple[str, str], tuple[float, int, str]] = {}
    for family, models in families.items():
        for name, model in models.items():
            before = cache_size(model)
            with counter.counting() as compiled:
                wall = fit(model, short)
            second[family, name] = (wall, len(compiled), f"{before} -> {cache_size(model)}")
            print(f"  {family:9s} {name:30s} second fit: {wall * 1e3:7.1f} ms wall, {len(compiled)} XLA compilations "
                  f"({', '.join(sorted({f for f, _ in compiled})) or 'none'}); fit-loop jit cache "
                  f"{second[family, name][2]}")  # fmt: skip
    other: dict[tuple[str, str], int] = {}
    for family, models in families.items():
        for name, model in models.items():
            with counter.counting() as compiled:
                model.fit(λ=5.0, ϵ=0.05, rng=jax.random.key(FIT_KEY + 1), patience=3, min_iterations=2,
                          max_iterations=short, best=False)  # fmt: skip
            other[family, name] = len(compiled)

    # ---- 2. interleaved timed runs
    print(f"\n[timed runs: ms per iteration, {n} iterations each; within a family ABBA with the in-memory model "
          "in the middle]")  # fmt: skip
    times = {(f, name): [] for f, models in families.items() for name in models}
    short_times = {key: [] for key in times}
    orders = {}
    for family, models in families.items():
        aggregated = [name for name in models if name != in_memory[family]]
        half = (len(aggregated) + 1) // 2
        orders[family] = [*aggregated[:half], in_memory[family], *aggregated[half:]]
    loads = []
    with counter.counting() as timed_compiles:
        for repeat in range(repeats):
            for family, order in orders.items():
                for name in order if repeat % 2 == 0 else order[::-1]:
                    model = families[family][name]
                    short_times[family, name].append(fit(model, short))
                    times[family, name].append(fit(model, n))
            loads.append(os.getloadavg()[0])
            print(f"  repeat {repeat + 1:2d} (load {loads[-1]:.2f}): " + "  ".join(
                f"{f[:4]}/{'mem' if name == in_memory[f] else name.split('=')[1]} {ms(t[-1], n):6.2f}"
                for (f, name), t in times.items()))  # fmt: skip

    per_it = {key: [ms(t, n) for t in ts] for key, ts in times.items()}
    slope = {key: [1e3 * (t - s) / (n - short) for t, s in zip(times[key], short_times[key])] for key in times}

    # ---- 3. table
    width = 140
    print("\n" + "=" * width)
    print(f"{'family':9s} {'variant':30s} {'ms/it (wall/N)':>26s} {'ms/it (slope)':>26s} "
          f"{'aggregated / in-memory, median (IQR)':>45s}")  # fmt: skip
    print(f"{'':9s} {'':30s} {'':>26s} {'':>26s} {'wall/N':>22s} {'slope':>22s}")
    print("-" * width)
    worst = 0.0
    for family, models in families.items():
        base = (family, in_memory[family])
        for name in models:
            key = (family, name)
            ratios = ["", ""]
            if name != in_memory[family]:
                for i, table in enumerate((per_it, slope)):
                    q1, q2, q3 = paired(table[key], table[base])
                    ratios[i] = f"{q2:.2f} ({q1:.2f}–{q3:.2f})"
                    worst = max(worst, q2)
            print(f"{family:9s} {name:30s} {summary(per_it[key]):>26s} {summary(slope[key]):>26s} "
                  f"{ratios[0]:>22s} {ratios[1]:>22s}")  # fmt: skip
        print("-" * width)
    verdict = "OK" if worst <= 2.0 else "ABOVE TARGET"
    print(f"largest median ratio aggregated / in-memory: {worst:.2f}   target ≤ 2.0: {verdict}")
    print("-" * width)
    print(f"{'family':9s} {'variant':30s} {'first fit':>10s} {'compiles':>9s} {'compile s':>10s} {'2nd fit':>9s} "
          f"{'compiles in: 2nd fit':>21s} {'other settings':>15s} {'rel. Δ|F| vs in-mem':>19s}")  # fmt: skip
    for family, models in families.items():
        for name in models:
            wall, count, compile_s = first[family, name]
            diff = f"{same[family, name]:.1e}" if (family, name) in same else "(reference)"
            second_ms, second_compiles = second[family, name][0] * 1e3, second[family, name][1]
            print(f"{family:9s} {name:30s} {wall:8.2f} s {count:9d} {compile_s:8.2f} s {second_ms:6.0f} ms "
                  f"{second_compiles:21d} {other[family, name]:15d} {diff:>19s}")  # fmt: skip
    names = ", ".join(sorted({f for f, _ in timed_compiles}))
    print(f"XLA compilations during all {repeats * sum(len(m) for m in families.values()) * 2} timed fits: "
          f"{len(timed_compiles)}" + (f" ({names})" if names else ""))  # fmt: skip
    print(f"(rel. Δ|F|: largest relative difference of |F| from the in-memory model's over the {short} iterations "
          "of the first fit, from the same weights and keys)")  # fmt: skip
    print("load average (1 min) during the repeats: min {:.2f}, max {:.2f}; at end (1, 5, 15 min): "
          "{:.2f} {:.2f} {:.2f}".format(min(loads), max(loads), *os.getloadavg()))  # fmt: skip
    print("=" * width)


if __name__ == "__main__":
    sys.exit(main())
