"""Summary sources: derivatives agree with the chain rule written out explicitly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.example_libraries import stax

from imnn import sources
from imnn.problems import GaussianMeanVariance

PROBLEM = GaussianMeanVariance()
INIT, APPLY = stax.serial(stax.Dense(16), stax.Tanh, stax.Dense(3))
W = INIT(jax.random.key(0), PROBLEM.input_shape)[1]
θ_FID = jnp.array(PROBLEM.θ_fid)


def explicit_derivatives(d, dd_dθ):
    """(∂x/∂d)(dd/dθ) with the full input Jacobian, for comparison only."""
    jacobian = jax.vmap(jax.jacfwd(lambda d: APPLY(W, d)))(d)  # (n, n_summaries, input)
    return jnp.einsum("nsi,nip->nsp", jacobian, dd_dθ)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_simulator_source_matches_chain_rule_in_both_modes(mode):
    key, n_s, n_d = jax.random.key(1), 50, 20
    x, dx = sources.summarise(sources.simulator(PROBLEM.simulator, θ_FID, n_s, n_d, mode), APPLY, W, None, key)
    keys = jax.random.split(key, n_s)
    sims = jax.vmap(PROBLEM.simulator, (0, None))(keys, θ_FID)
    dd_dθ = jax.vmap(jax.jacfwd(PROBLEM.simulator, 1), (0, None))(keys[:n_d], θ_FID)
    np.testing.assert_allclose(x, jax.vmap(APPLY, (None, 0))(W, sims), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx, explicit_derivatives(sims[:n_d], dd_dθ), rtol=1e-4, atol=1e-6)
    assert x.shape == (n_s, 3) and dx.shape == (n_d, 3, 2)


def test_gradient_source_equals_simulator_source_on_the_same_simulations():
    key, n_s, n_d = jax.random.key(2), 40, 15
    stored = PROBLEM.simulations(key, n_s, n_d)
    x, dx = sources.summarise(sources.gradient(n_d), APPLY, W, (stored.fiducial, stored.derivative), None)
    x_sim, dx_sim = sources.summarise(sources.simulator(PROBLEM.simulator, θ_FID, n_s, n_d), APPLY, W, None, key)
    np.testing.assert_allclose(x, x_sim, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx, dx_sim, rtol=1e-4, atol=1e-6)


def test_numerical_source_approaches_the_exact_derivative():
    key, n_s, n_d = jax.random.key(3), 40, 15
    stored = PROBLEM.simulations(key, n_s, n_d, δθ=(1e-2, 1e-2))
    x, dx = sources.summarise(
        sources.numerical(stored.δθ, n_d), APPLY, W, (stored.fiducial, stored.numerical_derivative), None
    )
    exact = sources.summarise(sources.gradient(n_d), APPLY, W, (stored.fiducial, stored.derivative), None)[1]
    np.testing.assert_allclose(x, jax.vmap(APPLY, (None, 0))(W, stored.fiducial), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx, exact, rtol=5e-2, atol=5e-3)


@pytest.mark.parametrize(
    "n_params,n_summaries,input_size,expected",
    [(2, 4, 10, "forward"), (3, 2, 10, "reverse"), (2, 2, 10, "reverse"), (2, 2, 4096, "forward")],
)
def test_auto_mode_picks_fewer_passes_and_breaks_ties_by_input_size(n_params, n_summaries, input_size, expected):
    assert sources.simulator_mode("auto", n_params, n_summaries, input_size) == expected
    assert sources.simulator_mode("forward", n_params, n_summaries, input_size) == "forward"
