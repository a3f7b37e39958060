"""Does ``fit`` run a convolutional network as fast as a plain jitted step called from Python?

Problem: the 2-D Gaussian random field of the GRF notebook (:class:`imnn.problems.GaussianRandomField`,
P(k) = A k^−B at θ = (1, 0.5)), a SimulatorIMNN with n_s = n_d = 500 fresh fields per iteration, and the
notebook's band-power CNN written with plain ``flax.linen.Conv`` (four 3×3 convolutions with 8 filters,
each followed by a log band power and a 2×2 average; a 32-unit dense head), ``optax.adam(1e-2)``.

XLA:CPU compiles the kernel gradient of a convolution inside loops (every iteration of a
``lax.while_loop`` fit chunk) far worse than outside them, so on a CPU the engine measures a
``while_loop`` chunk against one program per iteration on the first iterations and keeps the faster.

Measured in one run:

1. what the engine chose on the first fit, with its measured ms per iteration for each mode;
2. ms per iteration of ``model.fit`` (whole calls of N iterations, the closing statistics pass included)
   and of the reference: one ``jax.jit``-compiled step (the same loss, written in ``_shared.py`` without
   imnn, with ``value_and_grad`` and the adam update) called N times from a Python loop; interleaved
   in ABBA order, ratio = median of per-repeat ratios (goal ≤ 1.1);
3. the same fit forced into the ``while_loop`` (``dispatch="loop"``) for a few iterations: what the
   engine used to do;
4. XLA compilations of a second ``fit`` (should be 0).

Run:  python benchmarks/cnn_speed.py                      (~4 min on 2 CPU cores)
      python benchmarks/cnn_speed.py --size 16 -n 5 -r 3 --loop-iterations 0
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _shared import CompileCounter, fit, reference_loss

import imnn
from imnn.problems import GaussianRandomField

λ, ϵ = 10.0, 0.1
LEARNING_RATE = 1e-2
WEIGHTS_KEY, FIT_KEY = 0, 1


class BandPowers(nn.Module):
    """The GRF notebook's network, with plain ``nn.Conv`` layers."""

    @nn.compact
    def __call__(self, x):
        log_powers = []
        for _ in range(4):
            x = nn.Conv(8, (3, 3))(x)
            log_powers.append(jnp.log(jnp.mean(x**2, axis=(0, 1)) + 1e-6))
            x = x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2, -1).mean((1, 3))
        h = nn.leaky_relu(nn.Dense(32)(jnp.concatenate(log_powers)))
        return nn.Dense(2)(h)


class Reference:
    """One jitted IMNN step (loss, gradient, adam) called from a Python loop; independent of imnn."""

    def __init__(self, problem: GaussianRandomField, n_s: int, n_d: int):
        network = BandPowers()
        self.optimiser = optax.adam(LEARNING_RATE)
        loss = reference_loss(network.apply, problem.simulator, problem.θ_fid, n_s, n_d, 2)

        @jax.jit
        def step(w, opt_state, key, λ, α):
            key, subkey = jax.random.split(key)
            value, grads = jax.value_and_grad(loss)(w, subkey, λ, α)
            updates, opt_state = self.optimiser.update(grads, opt_state, w)
            return optax.apply_updates(w, updates), opt_state, key, value

        self.step = step
        self.w = network.init(jax.random.key(WEIGHTS_KEY), jnp.zeros(problem.input_shape))
        self.opt_state = self.optimiser.init(self.w)
        self.key = jax.random.key(FIT_KEY)
        self.λ, self.α = jnp.float32(λ), jnp.float32(-np.log(ϵ * (λ - 1.0) + ϵ**2 / (1.0 + ϵ)) / ϵ)

    def run(self, n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            self.w, self.opt_state, self.key, value = self.step(self.w, self.opt_state, self.key, self.λ, self.α)
        jax.block_until_ready(value)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=32, help="field side (default 32)")
    parser.add_argument("--n-s", type=int, default=500, help="n_s = n_d (default 500)")
    parser.add_argument("-n", "--iterations", type=int, default=10, help="iterations per timed run (default 10)")
    parser.add_argument("-r", "--repeats", type=int, default=4, help="timed runs of each variant (default 4)")
    parser.add_argument("--loop-iterations", type=int, default=2, help="iterations forced into the loop (0: skip)")
    args = parser.parse_args()
    n, n_s = args.iterations, args.n_s

    print(f"imnn {imnn.__version__}, jax {jax.__version__}, python {platform.python_version()}")
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), host CPUs: {os.cpu_count()}")
    print(f"problem: {args.size}×{args.size} GRF, SimulatorIMNN n_s = n_d = {n_s}, band-power CNN with nn.Conv")
    print("load average (1, 5, 15 min) at start: {:.2f} {:.2f} {:.2f}\n".format(*os.getloadavg()))

    problem = GaussianRandomField(args.size)
    model = imnn.SimulatorIMNN(
        n_s=n_s, n_d=n_s, n_params=2, n_summaries=2, input_shape=problem.input_shape, θ_fid=problem.θ_fid,
        model=BandPowers(), optimiser=optax.adam(LEARNING_RATE), key_or_state=jax.random.key(WEIGHTS_KEY),
        simulator=problem.simulator, derivative_mode="forward", verbose=False,
    )  # fmt: skip
    counter = CompileCounter()
    first = fit(model, 4)
    print(f"[first fit, 4 iterations: {first:.1f} s with compilation]")
    print(f"  engine chose: {model._chunk.describe()}")

    reference = Reference(problem, n_s, n_s)
    reference.run(1)  # compile

    with counter.counting() as compiled:
        fit(model, 2)
    print(f"  XLA compilations in a second fit: {len(compiled)}")

    times: dict[str, list[float]] = {"imnn fit": [], "reference": []}
    for repeat in range(args.repeats):
        order = ["reference", "imnn fit"] if repeat % 2 == 0 else ["imnn fit", "reference"]
        for name in order:
            times[name].append((fit(model, n) if name == "imnn fit" else reference.run(n)) / n)
        print(f"  repeat {repeat + 1}: " + "   ".join(f"{k} {1e3 * v[-1]:8.1f} ms/it" for k, v in times.items()))

    ratios = [a / b for a, b in zip(times["imnn fit"], times["reference"])]
    print("\n" + "=" * 78)
    for name, values in times.items():
        print(f"{name:30s} ms/it: min {1e3 * min(values):8.1f}   median {1e3 * statistics.median(values):8.1f}")
    if args.loop_iterations:
        loop_time = []
        for _ in range(2):  # the first compiles the loop (if `auto` never did)
            started = time.perf_counter()
            model.fit(λ=λ, ϵ=ϵ, rng=jax.random.key(FIT_KEY), patience=10**9, min_iterations=args.loop_iterations,
                      max_iterations=args.loop_iterations, dispatch="loop")  # fmt: skip
            loop_time.append((time.perf_counter() - started) / args.loop_iterations)
        print(f"{'imnn fit, dispatch=loop':30s} ms/it: {1e3 * loop_time[-1]:8.1f}   "
              f"({loop_time[-1] / statistics.median(times['reference']):.1f}× the reference)")  # fmt: skip
    print(f"ratio imnn fit / reference (median of paired ratios): {statistics.median(ratios):.3f}   goal ≤ 1.1")
    print("load average (1, 5, 15 min) at end:   {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print("=" * 78)


if __name__ == "__main__":
    main()
