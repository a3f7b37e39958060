"""Fisher statistics, regulariser and estimate against formulas evaluated by hand in numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imnn import fisher, utils

RNG = np.random.default_rng(0)


def hand_statistics(x, dx):
    n_s = x.shape[0]
    μ = x.sum(0) / n_s
    C = sum(np.outer(xi - μ, xi - μ) for xi in x) / (n_s - 1)
    invC = np.linalg.inv(C)
    dμ = dx.sum(0) / dx.shape[0]
    F = np.zeros((dx.shape[2], dx.shape[2]))
    for a in range(dx.shape[2]):
        for b in range(dx.shape[2]):
            F[a, b] = dμ[:, a] @ invC @ dμ[:, b]
    return F, C, invC, dμ, μ


@pytest.mark.parametrize("n_summaries,n_params", [(3, 2), (1, 1), (4, 3)])
def test_statistics_match_hand_computation(n_summaries, n_params):
    x = RNG.normal(size=(50, n_summaries)) @ RNG.normal(size=(n_summaries, n_summaries)) + 0.3
    dx = RNG.normal(size=(20, n_summaries, n_params)) + 1.0
    stats = fisher.statistics(jnp.asarray(x), jnp.asarray(dx))
    expected = hand_statistics(x, dx)
    for got, want in zip(stats, expected):
        np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4, atol=1e-5)
    assert stats.C.shape == (n_summaries, n_summaries)
    assert stats.F.shape == (n_params, n_params)


def test_n_d_smaller_than_n_s_uses_only_derivative_sims():
    x = jnp.asarray(RNG.normal(size=(40, 2)))
    dx = jnp.asarray(RNG.normal(size=(7, 2, 2)))
    np.testing.assert_allclose(fisher.statistics(x, dx).dμ_dθ, np.asarray(dx).mean(0), rtol=1e-5)


def test_alpha_regulariser_and_strength_follow_the_formulas():
    λ, ϵ = 10.0, 0.1
    α = float(fisher.alpha(λ, ϵ))
    assert α == pytest.approx(-np.log(ϵ * (λ - 1) + ϵ**2 / (1 + ϵ)) / ϵ, rel=1e-6)
    C = np.array([[2.0, 0.3], [0.3, 0.5]])
    invC = np.linalg.inv(C)
    Λ2 = float(fisher.regulariser(jnp.asarray(C), jnp.asarray(invC)))
    want = np.sqrt(((C - np.eye(2)) ** 2).sum()) + np.sqrt(((invC - np.eye(2)) ** 2).sum())
    assert Λ2 == pytest.approx(want, rel=1e-5)
    r = float(fisher.regularisation_strength(Λ2, λ, α))
    assert r == pytest.approx(λ * Λ2 / (Λ2 + np.exp(-α * Λ2)), rel=1e-5)


def test_regulariser_vanishes_at_identity_with_finite_gradient():
    grad = jax.grad(lambda C: fisher.regulariser(C, jnp.linalg.inv(C)))(jnp.eye(3))
    assert float(fisher.regulariser(jnp.eye(3), jnp.eye(3))) == 0.0
    assert np.all(np.isfinite(grad))


def test_loss_is_minus_log_det_F_plus_r_Λ2():
    x = jnp.asarray(RNG.normal(size=(100, 2)) * 1.5)
    dx = jnp.asarray(RNG.normal(size=(100, 2, 2)) + np.eye(2))
    λ, ϵ = 5.0, 0.2
    α = fisher.alpha(λ, ϵ)
    value, metrics = fisher.loss(x, dx, λ, α)
    F, C, invC, _, _ = hand_statistics(np.asarray(x), np.asarray(dx))
    Λ2 = np.linalg.norm(C - np.eye(2)) + np.linalg.norm(invC - np.eye(2))
    r = λ * Λ2 / (Λ2 + np.exp(-float(α) * Λ2))
    assert float(value) == pytest.approx(-np.log(np.linalg.det(F)) + r * Λ2, rel=1e-4)
    assert float(metrics.detF) == pytest.approx(np.linalg.det(F), rel=1e-4)
    assert float(metrics.detC) == pytest.approx(np.linalg.det(C), rel=1e-4)
    assert float(metrics.detinvC) == pytest.approx(np.linalg.det(invC), rel=1e-4)


def test_log_det_is_minus_infinity_for_non_positive_definite():
    assert float(fisher.log_det(jnp.diag(jnp.array([1.0, -2.0])))) == -np.inf
    assert float(fisher.log_det(jnp.diag(jnp.array([2.0, 3.0])))) == pytest.approx(np.log(6.0))


def test_estimate_is_θ_fid_at_the_mean_and_linear_around_it():
    x = jnp.asarray(RNG.normal(size=(200, 3)))
    dx = jnp.asarray(RNG.normal(size=(200, 3, 2)) + 1.0)
    stats = fisher.statistics(x, dx)
    θ_fid = jnp.array([0.5, -1.0])
    np.testing.assert_allclose(fisher.estimate(stats.μ, stats, θ_fid), θ_fid, atol=1e-6)
    shift = jnp.asarray(RNG.normal(size=3))
    F, _, invC, dμ, _ = (np.asarray(s, dtype=float) for s in stats)
    want = np.asarray(θ_fid) + np.linalg.inv(F) @ dμ.T @ invC @ np.asarray(shift)
    np.testing.assert_allclose(fisher.estimate(stats.μ + shift, stats, θ_fid), want, rtol=1e-4, atol=1e-5)
    batch = jnp.stack([stats.μ, stats.μ + shift])
    assert fisher.estimate(batch, stats, θ_fid).shape == (2, 2)


def test_value_and_jacobians_match_jax():
    def f(θ):
        return jnp.array([jnp.sin(θ[0]) * θ[1], θ[0] ** 2, jnp.exp(θ[1])])

    θ = jnp.array([0.3, 1.2])
    for transform in (utils.value_and_jacfwd, utils.value_and_jacrev):
        value, jacobian = transform(f)(θ)
        np.testing.assert_allclose(value, f(θ), rtol=1e-6)
        np.testing.assert_allclose(jacobian, jax.jacfwd(f)(θ), rtol=1e-6)
    (value, aux), jacobian = utils.value_and_jacrev(lambda θ: (f(θ), θ.sum()), has_aux=True)(θ)
    assert float(aux) == pytest.approx(1.5)
    value, jvps = utils.value_and_jvps(f, θ, jnp.eye(2))
    np.testing.assert_allclose(jvps, jax.jacfwd(f)(θ), rtol=1e-6)
