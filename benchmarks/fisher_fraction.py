"""What fraction of the analytic Fisher information does each IMNN recover?

Gaussian mean and variance (10 draws, θ_fid = (0, 1), analytic |F| = 50),
3 × 128 MLP, adam(1e-3), λ = 10, ϵ = 0.1. The SimulatorIMNN draws 1 000 fresh
simulations per iteration for 2 000 iterations; the Gradient and
NumericalGradient IMNNs train on 1 000 fixed simulations with validation early
stopping (patience 100). Each fitted network's |F| is then measured on 20 000
new simulations with exact derivatives (1 000 would fluctuate by tens of percent).

Run: python benchmarks/fisher_fraction.py      (~2 minutes on 2 CPU cores)
"""

from __future__ import annotations

import time

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.example_libraries import optimizers, stax

import imnn
from imnn.problems import GaussianMeanVariance

PROBLEM = GaussianMeanVariance()
N_S, N_EVALUATION = 1000, 20_000


class MLP(nn.Module):
    @nn.compact
    def __call__(self, d):
        for _ in range(3):
            d = nn.leaky_relu(nn.Dense(128)(d))
        return nn.Dense(2)(d)


FRAMEWORKS = {
    "flax + optax": lambda: (MLP(), optax.adam(1e-3)),
    "stax + example_libraries": lambda: (stax.serial(*[stax.Dense(128), stax.LeakyRelu] * 3, stax.Dense(2)),
                                         optimizers.adam(1e-3)),
}  # fmt: skip


def build(kind: str, network, optimiser):
    common = dict(
        n_s=N_S, n_d=N_S, n_params=2, n_summaries=2, input_shape=PROBLEM.input_shape, θ_fid=PROBLEM.θ_fid,
        model=network, optimiser=optimiser, key_or_state=jax.random.key(0), verbose=False,
    )  # fmt: skip
    if kind == "simulator":
        return imnn.IMNN(**common, simulator=PROBLEM.simulator)
    train = PROBLEM.simulations(jax.random.key(1), N_S, N_S)
    valid = PROBLEM.simulations(jax.random.key(2), N_S, N_S)
    numerical = kind == "numerical"

    def pick(s):
        return s.numerical_derivative if numerical else s.derivative

    return imnn.IMNN(
        **common, fiducial=train.fiducial, derivative=pick(train), δθ=train.δθ if numerical else None,
        validation_fiducial=valid.fiducial, validation_derivative=pick(valid),
    )  # fmt: skip


def detF_on_new_simulations(model, network, optimiser) -> float:
    sims = PROBLEM.simulations(jax.random.key(12345), N_EVALUATION, N_EVALUATION)
    evaluator = imnn.GradientIMNN(
        N_EVALUATION, N_EVALUATION, 2, 2, PROBLEM.input_shape, PROBLEM.θ_fid, network, optimiser, model.state,
        fiducial=sims.fiducial, derivative=sims.derivative, verbose=False,
    )  # fmt: skip
    evaluator.set_F_statistics(w=model.w, validate=False)
    return float(np.linalg.det(evaluator.F))


def main() -> None:
    analytic = float(np.linalg.det(PROBLEM.fisher()))
    print(f"{'variant':<24}{'framework':<26}{'iterations':>11}{'|F| (20k sims)':>16}{'fraction':>10}{'seconds':>9}")
    for kind in ("simulator", "gradient", "numerical"):
        for framework, make in FRAMEWORKS.items():
            network, optimiser = make()
            started = time.perf_counter()
            model = build(kind, network, optimiser)
            if kind == "simulator":
                model.fit(10.0, 0.1, rng=jax.random.key(1), patience=2000, max_iterations=2000)
            else:
                model.fit(10.0, 0.1, patience=100, max_iterations=3000)
            seconds = time.perf_counter() - started
            detF = detF_on_new_simulations(model, network, optimiser)
            name = type(model).__name__
            n = len(model.history["detF"])
            print(f"{name:<24}{framework:<26}{n:>11}{detF:>16.1f}{detF / analytic:>10.0%}{seconds:>9.1f}")
    print(f"analytic |F| = {analytic:.1f}")


if __name__ == "__main__":
    main()
