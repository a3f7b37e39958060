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
# # IMNN or regression?
#
# A common alternative compressor is a network trained by regression: draw θ from the prior, simulate,
# and minimise the squared error of the network's prediction of θ. Its outputs approximate the
# posterior mean, which depends on the prior and on how well the network fits everywhere in it. An IMNN
# instead maximises the Fisher information of its outputs at a fiducial point, with no prior and no
# targets.
#
# Both use the same network on the same problem — ten draws from N(μ, Σ), analytic |F| = 50 at
# θ = (0, 1) — and the same number of simulations seen. We compare the Fisher information their outputs
# keep and the ABC posteriors they give for one target against the exact posterior.
#
# Small and quick by default; `IMNN_NOTEBOOK_FULL=1` trains both for longer.

# %%
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax

import imnn
from imnn.lfi import marginals
from imnn.problems import GaussianMeanVariance

FULL = os.environ.get("IMNN_NOTEBOOK_FULL") == "1"
ITERATIONS = 3000 if FULL else 500
problem = GaussianMeanVariance()
low, high = jnp.array([-2.0, 0.2]), jnp.array([2.0, 3.0])
prior = dist.Uniform(low, high).to_event(1)


class MLP(nn.Module):
    @nn.compact
    def __call__(self, d):
        for _ in range(2):
            d = nn.leaky_relu(nn.Dense(64)(d))
        return nn.Dense(2)(d)


# %% [markdown]
# ## The IMNN: 1 000 fresh simulations at the fiducial point per iteration

# %%
settings = dict(
    n_s=1000, n_d=1000, n_params=2, n_summaries=2, input_shape=(10,), θ_fid=jnp.array(problem.θ_fid),
    model=MLP(), optimiser=optax.adam(1e-3),
)
model = imnn.SimulatorIMNN(**settings, key_or_state=jax.random.key(0), simulator=problem.simulator)
model.fit(λ=10.0, ϵ=0.1, rng=jax.random.key(1), patience=ITERATIONS, max_iterations=ITERATIONS)

# %% [markdown]
# ## Regression: 1 000 fresh prior draws per step, mean squared error of θ
#
# A hand-written optax loop; the predictions are standardised by the prior's range.

# %%
network = MLP()
scale = (high - low) / 2
centre = (high + low) / 2


def loss(w, key):
    θ_key, sim_key = jax.random.split(key)
    θ = prior.sample(θ_key, (1000,))
    d = problem.simulate_batch(sim_key, θ)
    prediction = jax.vmap(network.apply, (None, 0))(w, d) * scale + centre
    return jnp.mean(((prediction - θ) / scale) ** 2)


optimiser = optax.adam(1e-3)


@jax.jit
def train(w, key):
    def step(carry, key):
        w, state = carry
        value, grad = jax.value_and_grad(loss)(w, key)
        updates, state = optimiser.update(grad, state, w)
        return (optax.apply_updates(w, updates), state), value

    (w, _), losses = jax.lax.scan(step, (w, optimiser.init(w)), jax.random.split(key, ITERATIONS))
    return w, losses


w_regression, losses = train(network.init(jax.random.key(2), jnp.zeros(10)), jax.random.key(3))
print(f"regression loss: {float(losses[:50].mean()):.3f} → {float(losses[-50:].mean()):.3f}")


def regression(d):
    return jax.vmap(network.apply, (None, 0))(w_regression, jnp.atleast_2d(d)) * scale + centre


# %% [markdown]
# ## Fisher information of each compressor's outputs at the fiducial point
#
# From 10 000 new simulations and their derivatives, with `imnn.fisher.statistics`. The IMNN's
# quasi-maximum-likelihood estimates are an invertible linear map of its summaries: same information.

# %%
keys = jax.random.split(jax.random.key(4), 10_000)
θ_fid = jnp.array(problem.θ_fid)


def measured_detF(compress):
    x = jax.vmap(lambda key: compress(problem.simulator(key, θ_fid)))(keys)
    dx_dθ = jax.vmap(lambda key: jax.jacfwd(lambda θ: compress(problem.simulator(key, θ)))(θ_fid))(keys)
    statistics = imnn.fisher.statistics(x, dx_dθ)
    return float(jnp.linalg.det(statistics.F)), statistics.F


detF_imnn, F_imnn = measured_detF(model.get_estimate)
detF_regression, F_regression = measured_detF(lambda d: regression(d)[0])
print(f"|F|: analytic 50.0   IMNN {detF_imnn:.1f}   regression {detF_regression:.1f}")

# %% [markdown]
# ## Posteriors for one target
#
# Rejection ABC with each compressor (distances weighted by each compressor's own Fisher matrix, so
# ϵ means the same in both), against the exact posterior on the grid.

# %%
target = problem.simulator(jax.random.key(5), jnp.array([0.3, 1.5]))
exact = imnn.lfi.LikelihoodFreeInference(prior, gridsize=120)
grid = jnp.stack(jnp.meshgrid(*exact.ranges, indexing="ij"), -1)
log_p = problem.log_likelihood(grid, target)
density = np.asarray(jnp.exp(log_p - log_p.max()))
exact.put_marginals(density[None])
exact_mean, exact_std = marginals.moments(np.asarray(grid).reshape(-1, 2), density.ravel())
print(f"exact:      μ = {exact_mean[0]:+.3f} ± {exact_std[0]:.3f}   Σ = {exact_mean[1]:.3f} ± {exact_std[1]:.3f}")

ax = exact.marginal_plot(label="exact", colours="black", axis_labels=["μ", "Σ"])
n_samples = 200_000 if FULL else 50_000
for name, compress, F, colour in (("IMNN", model.get_estimate, model.F, "C0"),
                                  ("regression", regression, F_regression, "C1")):
    abc = imnn.lfi.ApproximateBayesianComputation(target, prior, problem.simulate_batch, compress, F=F)
    abc(ϵ=0.5, rng=jax.random.key(6), n_samples=n_samples)
    mean, std = marginals.moments(abc.parameters.accepted[0])
    print(f"{name:>10}: μ = {mean[0]:+.3f} ± {std[0]:.3f}   Σ = {mean[1]:.3f} ± {std[1]:.3f}"
          f"   ({abc.parameters.n_accepted[0]} accepted)")
    abc.marginal_plot(ax=ax, label=name, colours=colour, linestyle="dashed")
