"""imnn.rpm's time-series latent, GaussMarkov, against exact answers: the O(T) smoother against
dense Gaussian conditioning, its bound against use_theta (T = 1) and against quadrature (T = 2),
and a fit of an AR(1) latent against the exact smoother of the generating model."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imnn import rpm
from imnn.rpm import markov, objectives
from imnn.rpm.families import Gaussian, GaussianNatural


def _gaussian_tree(rng, *shape, d):
    h = rng.standard_normal((*shape, d))
    root = 0.5 * rng.standard_normal((*shape, d, d))
    precision = root @ np.swapaxes(root, -1, -2) + 0.3 * np.eye(d)
    return GaussianNatural(jnp.asarray(h), jnp.asarray(precision))


def _stationary_covariance(transition: np.ndarray, T: int) -> np.ndarray:
    """Cov(Z) float(T·d, T·d) of ``z₁ ~ N(0, I)``, ``zₜ = A zₜ₋₁ + wₜ``: block (t, s) is ``A^{t−s}``."""
    d = transition.shape[0]
    blocks = [[np.eye(d)] * T for _ in range(T)]
    for t in range(T):
        for s in range(t):
            blocks[t][s] = np.linalg.matrix_power(transition, t - s)
            blocks[s][t] = blocks[t][s].T
    return np.block(blocks)


def test_smoother_equals_dense_gaussian_conditioning():
    rng = np.random.default_rng(0)
    T, d = 7, 2
    transition = np.array([[0.6, 0.3], [-0.2, 0.5]])
    with jax.enable_x64(True):
        info = _gaussian_tree(rng, T, d=d)
        q = markov.smooth(jnp.asarray(transition), info.h, info.precision)
    precision = np.linalg.inv(_stationary_covariance(transition, T))
    for t in range(T):
        precision[t * d : (t + 1) * d, t * d : (t + 1) * d] += np.asarray(info.precision[t])
    cov = np.linalg.inv(precision)
    h = np.asarray(info.h).ravel()
    mean = cov @ h
    log_partition = 0.5 * h @ mean - 0.5 * np.linalg.slogdet(precision)[1] + 0.5 * T * d * math.log(2 * math.pi)
    np.testing.assert_allclose(np.asarray(q.mean).ravel(), mean, atol=1e-10)
    marginals = np.stack([cov[t * d : (t + 1) * d, t * d : (t + 1) * d] for t in range(T)])
    np.testing.assert_allclose(np.asarray(q.cov), marginals, atol=1e-10)
    np.testing.assert_allclose(float(q.log_partition), log_partition, atol=1e-10)


def test_one_step_chain_bound_is_the_use_theta_bound():
    rng = np.random.default_rng(1)
    d = 2
    one_step = lambda tree: jax.tree.map(lambda a: a[:, :, 0], tree)
    with jax.enable_x64(True):
        batch, bank = _gaussian_tree(rng, 3, 4, 1, d=d), _gaussian_tree(rng, 3, 6, 1, d=d)
        chain = markov.chain_bound(markov.GaussMarkov(1, d), jnp.full((d, d), 0.3), batch, bank)
        marginal = GaussianNatural(jnp.zeros(d), jnp.eye(d))
        plain = objectives.use_theta_bound(Gaussian(d), marginal, one_step(batch), one_step(bank))
    np.testing.assert_allclose(np.asarray(chain), np.asarray(plain), atol=1e-10)


def _log_normal(h, precision, z):
    return -0.5 * precision * (z - h / precision) ** 2 + 0.5 * np.log(precision / (2 * np.pi))


def test_chain_bound_is_below_the_exact_objective_by_quadrature():
    """T = 2, d = 1: ``log w = log ∫ p(z₁, z₂) Πⱼₜ fⱼ(zₜ|xⱼₜ)/Fⱼₜ(zₜ)`` on a 2-D grid."""
    rng = np.random.default_rng(2)
    a, n_views, n_batch, n_bank = 0.7, 3, 4, 6
    with jax.enable_x64(True):
        batch, bank = _gaussian_tree(rng, n_views, n_batch, 2, d=1), _gaussian_tree(rng, n_views, n_bank, 2, d=1)
        bound = np.asarray(markov.chain_bound(markov.GaussMarkov(2, 1), jnp.array([[a]]), batch, bank))
    grid = np.linspace(-10, 10, 1201)
    z = np.stack(np.meshgrid(grid, grid, indexing="ij"))  # (2, G, G)
    log_prior = _log_normal(0.0, 1.0, z[0]) + _log_normal(a * z[0] / (1 - a * a), 1 / (1 - a * a), z[1])

    def natural(tree, j, m, t):  # the factor's natural parameters: the N(0, 1) marginal + increment
        return float(tree.h[j, m, t, 0]), 1.0 + float(tree.precision[j, m, t, 0, 0])

    exact = []
    for b in range(n_batch):
        integrand = log_prior.copy()
        for j in range(n_views):
            for t in range(2):
                log_F = np.logaddexp.reduce([_log_normal(*natural(bank, j, m, t), z[t]) for m in range(n_bank)], 0)
                integrand += _log_normal(*natural(batch, j, b, t), z[t]) - (log_F - math.log(n_bank))
        exact.append(np.logaddexp.reduce(integrand.ravel()) + 2 * math.log(grid[1] - grid[0]))
    assert np.all(bound <= np.array(exact) + 1e-9), (bound, exact)
    assert np.all(np.array(exact) - bound < 1.0)  # a bound, not a trivial one


# ---------------------------------------------------------------- AR(1) latent seen through 3 noisy views
T, VIEWS, AR, NOISE = 20, 3, 0.9, 2.0
LOADINGS = np.array([1.0, -0.8, 1.2])


def ar1(n: int, seed: int):
    rng = np.random.default_rng(seed)
    z = np.zeros((n, T))
    z[:, 0] = rng.standard_normal(n)
    for t in range(1, T):
        z[:, t] = AR * z[:, t - 1] + math.sqrt(1 - AR**2) * rng.standard_normal(n)
    noise = NOISE * rng.standard_normal((VIEWS, n, T))
    return tuple((LOADINGS[j] * z + noise[j])[..., None].astype(np.float32) for j in range(VIEWS))


def exact_smoother(views) -> np.ndarray:
    """E[z | X] float(N, T) of the generating model (dense Gaussian conditioning, exact)."""
    precision = np.linalg.inv(AR ** np.abs(np.subtract.outer(np.arange(T), np.arange(T))))
    precision += np.eye(T) * np.sum(LOADINGS**2) / NOISE**2
    information = sum(LOADINGS[j] * views[j][..., 0] for j in range(VIEWS)) / NOISE**2
    return information @ np.linalg.inv(precision)


def affine_r2(fitted: np.ndarray, exact: np.ndarray) -> float:
    design = np.stack([fitted.ravel(), np.ones(fitted.size)], 1)
    coefficients, *_ = np.linalg.lstsq(design, exact.ravel(), rcond=None)
    return 1 - np.sum((design @ coefficients - exact.ravel()) ** 2) / np.sum((exact - exact.mean()) ** 2)


@pytest.fixture(scope="module")
def chains():
    train, test = ar1(500, 1), ar1(500, 3)
    fits = {}
    for name, prior in (("markov", None), ("iid", np.zeros((1, 1)))):
        model = rpm.RPM(rpm.GaussMarkov(T, 1), [rpm.Linear() for _ in range(VIEWS)], prior=prior,
                        normaliser="cache", key=jax.random.key(0))  # fmt: skip
        model.fit(train, steps=600, batch_size=100, learning_rate=3e-2, progress=False)
        fits[name] = model
    return fits, test


def test_ar1_smoothed_means_match_the_exact_smoother(chains):
    fits, test = chains
    exact = exact_smoother(test)
    mean, cov = fits["markov"].posterior(test)
    assert mean.shape == (500, T, 1) and cov.shape == (500, T, 1, 1)
    r2_markov = affine_r2(np.asarray(mean)[..., 0], exact)
    r2_iid = affine_r2(np.asarray(fits["iid"].posterior(test)[0])[..., 0], exact)
    assert r2_markov >= 0.98, r2_markov
    assert r2_markov - r2_iid >= 0.2, (r2_markov, r2_iid)


def test_ar1_coefficient_is_learnt(chains):
    fits, _ = chains
    transition = fits["markov"].prior
    assert abs(float(transition[0, 0]) - AR) <= 0.06, transition


def test_chain_diagnostics_and_save_load(chains, tmp_path):
    fits, test = chains
    test = tuple(view[:100] for view in test)
    report = fits["markov"].diagnostics(test)
    assert report["prior_mismatch"].shape == (VIEWS,) and np.all(report["prior_mismatch"] < 0.1)
    assert report["objective"] > 1.0  # the views share a latent: ≈ 3 nats per sequence
    each = fits["markov"].objective(test, per_item=True)
    assert each.shape == (100,) and abs(float(np.mean(each)) - report["objective"]) < 1e-5
    assert 0.4 < float(report["latent_usage"]["explained"][0]) < 1.0
    fits["markov"].save(tmp_path / "chain")
    loaded = rpm.RPM.load(tmp_path / "chain")
    for before, after in zip(fits["markov"].posterior(test), loaded.posterior(test)):
        np.testing.assert_allclose(np.asarray(after), np.asarray(before), atol=1e-6)


def test_chain_views_need_the_time_axis():
    model = rpm.RPM(rpm.GaussMarkov(T, 1), [rpm.Linear() for _ in range(VIEWS)])
    flat = tuple(np.zeros((10,), np.float32) for _ in range(VIEWS))
    with pytest.raises(ValueError, match=r"`views\[0\]`.*\(N, 20, \.\.\.\)"):
        model.fit(flat, steps=1, progress=False)
    wrong_length = tuple(np.zeros((10, T - 1, 1), np.float32) for _ in range(VIEWS))
    with pytest.raises(ValueError, match=r"`views\[0\]` has shape \(10, 19, 1\)"):
        model.fit(wrong_length, steps=1, progress=False)


def test_a_fixed_transition_must_be_stationary():
    with pytest.raises(ValueError, match="`prior`.*norm < 1"):
        rpm.RPM(rpm.GaussMarkov(T, 1), [rpm.Linear() for _ in range(VIEWS)], prior=np.array([[1.2]]))
    with pytest.raises(ValueError, match=r"`prior`.*\(2, 2\)"):
        rpm.RPM(rpm.GaussMarkov(T, 2), [rpm.Linear() for _ in range(VIEWS)], prior=np.zeros(3))
