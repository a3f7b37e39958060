"""The finite-difference bias check of numerical-gradient IMNNs, against exact values.

Data d = θ³·1 + noise (10 points, θ_fid = 1) with a linear network x = W·d + b: the
summaries' mean derivative is W·1·3θ², and a central difference with step h gives
W·1·(3 + h²/4) exactly (the noise is seed-matched and cancels). So with δθ = 1 the
two steps' F are (3.25/3)² and (3.0625/3)² times the exact F on the same covariance,
and the Richardson extrapolation is exact.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.example_libraries import stax

import imnn
from imnn import finite_differences

N_DATA, N_S, N_D = 10, 200, 50
θ_FID, δθ = jnp.array([1.0]), jnp.array([1.0])


def simulator(key, θ):
    return θ[0] ** 3 + jax.random.normal(key, (N_DATA,))


def stored(key):
    """Fiducial sims, and seed-matched pairs at θ ∓ δθ/2 and at θ ∓ δθ/4."""
    return finite_differences.simulate_steps(simulator, key, θ_FID, δθ, N_S, N_D)


def linear_imnn(fiducial, steps, cls=imnn.NumericalGradientIMNN, **extra):
    return cls(
        n_s=N_S, n_d=N_D, n_params=1, n_summaries=1, input_shape=(N_DATA,), θ_fid=θ_FID,
        model=stax.serial(stax.Dense(1)), optimiser=optax.adam(1e-3), key_or_state=jax.random.key(3),
        fiducial=fiducial, derivative=steps, δθ=δθ, verbose=False, **extra,
    )  # fmt: skip


def exact_F(model, fiducial):
    """F with the exact derivative dd/dθ = 3θ²·1 pushed through the network (a JVP)."""
    x = model.model(model.w, fiducial)
    tangent = jnp.full((N_DATA,), 3.0)
    dx = jax.jvp(lambda d: model.model(model.w, d), (fiducial[0],), (tangent,))[1]
    dx_dθ = jnp.broadcast_to(dx[None, :, None], (N_D, 1, 1))
    return float(imnn.fisher.statistics(x, dx_dθ).F[0, 0])


@pytest.fixture(scope="module")
def simulations():
    return stored(jax.random.key(0))


def check_against_exact(result, F):
    np.testing.assert_allclose(np.asarray(result.δθ), [[1.0], [0.5]])
    np.testing.assert_allclose(np.asarray(result.detF), [F * (3.25 / 3) ** 2, F * (3.0625 / 3) ** 2], rtol=1e-4)
    np.testing.assert_allclose(float(result.detF_extrapolated), F, rtol=1e-4)
    assert result.relative_change == pytest.approx((3.0625 / 3.25) ** 2 - 1, rel=1e-3)


def test_user_simulations_at_half_the_step_show_the_exact_bias(simulations):
    fiducial, steps, half_steps = simulations
    model = linear_imnn(fiducial, steps)
    check_against_exact(model.finite_difference_bias(half_steps), exact_F(model, fiducial))


def test_fewer_half_step_simulations_use_the_matching_rows(simulations):
    fiducial, steps, half_steps = simulations
    model = linear_imnn(fiducial, steps)
    check_against_exact(model.finite_difference_bias(half_steps[:20]), exact_F(model, fiducial))


def test_the_simulator_gives_the_same_figures_on_fresh_simulations(simulations):
    fiducial, steps, _ = simulations
    model = linear_imnn(fiducial, steps)
    fresh = stored(jax.random.key(7))[0]
    result = model.finite_difference_bias(simulator=simulator, key=jax.random.key(7))
    check_against_exact(result, exact_F(model, fresh))


def test_a_fine_step_has_no_visible_bias_for_a_linear_mean():
    def linear_mean(key, θ):
        return θ[0] + jax.random.normal(key, (N_DATA,))

    fiducial, steps, half_steps = finite_differences.simulate_steps(linear_mean, jax.random.key(1), θ_FID, δθ, N_S, N_D)
    result = linear_imnn(fiducial, steps).finite_difference_bias(half_steps)
    assert abs(result.relative_change) < 1e-4


def test_aggregated_and_in_memory_agree(simulations):
    fiducial, steps, half_steps = simulations
    devices = jax.devices()[:2]
    aggregated = linear_imnn(fiducial, steps, cls=imnn.AggregatedNumericalGradientIMNN,
                             host=devices[0], devices=devices, n_per_device=30)  # fmt: skip
    in_memory = linear_imnn(fiducial, steps)
    a, b = aggregated.finite_difference_bias(half_steps), in_memory.finite_difference_bias(half_steps)
    np.testing.assert_allclose(np.asarray(a.detF), np.asarray(b.detF), rtol=1e-5)


def test_bad_arguments_are_named(simulations):
    fiducial, steps, half_steps = simulations
    model = linear_imnn(fiducial, steps)
    with pytest.raises(ValueError, match="half_steps.*shape"):
        model.finite_difference_bias(half_steps[:, :, :, :5])
    with pytest.raises(ValueError, match="half_steps.*1 ≤ m ≤ 50"):
        model.finite_difference_bias(jnp.concatenate([half_steps, half_steps]))
    with pytest.raises(ValueError, match="`key`"):
        model.finite_difference_bias(simulator=simulator)
    with pytest.raises(ValueError, match="not both"):
        model.finite_difference_bias(half_steps, simulator=simulator, key=jax.random.key(0))
    with pytest.raises(ValueError, match="half_steps"):
        model.finite_difference_bias()
    with pytest.raises(TypeError, match="numerical-gradient"):
        finite_differences.finite_difference_bias(object())
