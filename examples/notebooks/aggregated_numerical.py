# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # AggregatedNumericalGradientIMNN: finite-difference simulations, in batches over devices
#
# NumericalGradientIMNN's data, moved to the devices in batches; the fit equals
# NumericalGradientIMNN's.
#
# Runs in under a minute on a laptop CPU; set `IMNN_NOTEBOOK_FULL=1` for the full-size fit.

# %%
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import imnn
from imnn.problems import GaussianMeanVariance

# Small and quick by default; IMNN_NOTEBOOK_FULL=1 for the full-size run.
FULL = os.environ.get("IMNN_NOTEBOOK_FULL") == "1"
ITERATIONS = 3000 if FULL else 300

# %% [markdown]
# ## The problem
#
# Ten draws from a normal distribution with unknown mean and variance θ = (μ, Σ), at the fiducial point
# θ_fid = (0, 1). The Fisher information of the data is F = diag(n/Σ, n/2Σ²), so |F| = 50: no
# summaries can carry more.

# %%
problem = GaussianMeanVariance(n_data=10, θ_fid=(0.0, 1.0))
print("analytic |F| =", float(np.linalg.det(problem.fisher())))


class Compressor(nn.Module):
    """Two hidden layers of 64 units: one simulation (10,) -> two summaries."""

    @nn.compact
    def __call__(self, d):
        for _ in range(2):
            d = nn.leaky_relu(nn.Dense(64)(d))
        return nn.Dense(2)(d)


settings = dict(
    n_s=1000, n_d=1000, n_params=2, n_summaries=2, input_shape=problem.input_shape,
    θ_fid=jnp.array(problem.θ_fid), model=Compressor(), optimiser=optax.adam(1e-3),
    key_or_state=jax.random.key(0),
)

# %%
sims = problem.simulations(jax.random.key(1), n_s=1000, n_d=1000)
validation = problem.simulations(jax.random.key(2), n_s=1000, n_d=1000)

# %% [markdown]
# ## Fit
#
# λ = 10 and ϵ = 0.1 set how strongly, and until how close to the identity, the covariance of the
# summaries is regularised.

# %%
devices = jax.devices()
model = imnn.AggregatedNumericalGradientIMNN(
    **settings, fiducial=sims.fiducial, derivative=sims.numerical_derivative, δθ=sims.δθ,
    validation_fiducial=validation.fiducial, validation_derivative=validation.numerical_derivative,
    host=jax.devices("cpu")[0], devices=devices, n_per_device=1000 // len(devices) // 2,
)
model.fit(λ=10.0, ϵ=0.1, patience=100, max_iterations=ITERATIONS)

# %% [markdown]
# ## Training history
#
# |F| rises towards the analytic 50 (dashed) while the covariance of the summaries is pulled to the
# identity (|C| → 1) and the regulariser switches off.

# %%
ax = model.plot(expected_detF=50)

# %% [markdown]
# ## How much information did the summaries keep?
#
# The |F| of the 1 000 training simulations fluctuates by tens of percent, so measure it on 10 000 new
# ones, and estimate the parameters of a target simulated at θ = (0.3, 1.5).

# %%
detF = float(np.linalg.det(problem.measured_fisher(model, jax.random.key(9))))
print(f"|F| of the summaries on 10 000 new simulations: {detF:.1f} (analytic 50)")
target = problem.simulator(jax.random.key(10), jnp.array([0.3, 1.5]))
print("estimate:", np.round(model.get_estimate(target), 3), "±", np.round(np.sqrt(np.diag(model.invF)), 3))
