"""Small IMNNs on the Gaussian problem, shared by the factory and bad-input tests."""

import jax
import jax.numpy as jnp
import optax
from jax.example_libraries import stax

from imnn.problems import GaussianMeanVariance

N_S, N_D, N_PARAMS, N_SUMMARIES = 100, 50, 2, 2
PROBLEM = GaussianMeanVariance(n_data=10)
INPUT_SHAPE = PROBLEM.input_shape
θ_FID = jnp.array(PROBLEM.θ_fid)
FIT = dict(λ=10.0, ϵ=0.1, min_iterations=0)
KINDS = ["simulator", "gradient", "numerical"]
STORED = ["gradient", "numerical"]


def stax_model(n_out=N_SUMMARIES):
    return stax.serial(stax.Dense(8), stax.LeakyRelu, stax.Dense(n_out))


def common(**overrides):
    """The arguments every IMNN takes, with a stax model and optax Adam."""
    kwargs = dict(
        n_s=N_S, n_d=N_D, n_params=N_PARAMS, n_summaries=N_SUMMARIES, input_shape=INPUT_SHAPE,
        θ_fid=θ_FID, model=stax_model(), optimiser=optax.adam(1e-3),
        key_or_state=jax.random.key(0), verbose=False,
    )  # fmt: skip
    kwargs.update(overrides)
    return kwargs


def source_kwargs(kind, sims, validation_sims=None, **overrides):
    """Data arguments of a ``"simulator"``, ``"gradient"`` or ``"numerical"`` IMNN."""
    if kind == "simulator":
        return dict(simulator=PROBLEM.simulator, **overrides)

    def pick(s):
        return s.derivative if kind == "gradient" else s.numerical_derivative

    kwargs = dict(fiducial=sims.fiducial, derivative=pick(sims))
    if kind == "numerical":
        kwargs["δθ"] = sims.δθ
    if validation_sims is not None:
        kwargs.update(validation_fiducial=validation_sims.fiducial, validation_derivative=pick(validation_sims))
    kwargs.update(overrides)
    return kwargs
