"""Hybrid summaries [fixed(d), network(d)] on a Gaussian random field, against its analytic Fisher matrix.

The field's power in each mode is all the information there is; binned in unit shells of |k| the
power spectrum keeps nearly all of it, in two coarse bins it loses a large part. A network that
weights each mode's power by a learned function of |k| can recover what the coarse bins miss.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import imnn
from imnn import fisher, hybrid
from imnn.hybrid import Hybrid
from imnn.problems import GaussianRandomField

FIELD = GaussianRandomField(size=8)
θ_FID = jnp.array(FIELD.θ_fid)
ANALYTIC_DETF = float(jnp.linalg.det(FIELD.fisher()))
frequencies = jnp.fft.fftfreq(FIELD.size) * FIELD.size
k = jnp.sqrt(frequencies[:, None] ** 2 + frequencies[None, :] ** 2).ravel()
nonzero = k > 0


def power(d):
    """The power in each Fourier mode of one field, float(size²)."""
    return (jnp.abs(jnp.fft.fft2(d[..., 0])) ** 2).ravel() / FIELD.size**2


def binned_power(bin_of_mode):
    """The mean power in each bin, of the non-zero modes (``bin_of_mode``: int(size²))."""
    averaging = jax.nn.one_hot(bin_of_mode, int(bin_of_mode.max()) + 1).T * nonzero
    averaging = averaging / averaging.sum(axis=1, keepdims=True)
    return lambda d: averaging @ power(d)


STATISTICS = {
    "unit shells": binned_power(jnp.where(nonzero, jnp.clip(jnp.round(k).astype(int) - 1, 0), 0)),
    "two bins": binned_power((k > jnp.median(k[nonzero])).astype(int)),
}


class ModeWeighting(nn.Module):
    """Each mode's power weighted by a small MLP of ln|k|: two summaries."""

    @nn.compact
    def __call__(self, d):
        ln_k = jnp.log(jnp.where(nonzero, k, 1.0))[:, None]
        weights = nn.Dense(2)(nn.tanh(nn.Dense(16)(ln_k)))  # (size², 2)
        return jnp.sum(weights * (power(d) * nonzero)[:, None], axis=0) / nonzero.sum()


@functools.partial(jax.jit, static_argnums=0)
def fiducial_fields(n, seed=0):
    return jax.vmap(FIELD.simulator, (0, None))(jax.random.split(jax.random.key(seed), n), θ_FID)


def hybrid_imnn(fixed, n_s=500, state=None):
    n_fixed = hybrid.n_fixed(Hybrid(fixed, None), FIELD.input_shape)
    return imnn.SimulatorIMNN(
        n_s=n_s, n_d=n_s, n_params=2, n_summaries=n_fixed + 2, input_shape=FIELD.input_shape, θ_fid=θ_FID,
        model=Hybrid(fixed, ModeWeighting()), optimiser=optax.adam(1e-2),
        key_or_state=jax.random.key(1) if state is None else state, simulator=FIELD.simulator, verbose=False,
    )  # fmt: skip


def fit_and_measure(name):
    """The fitted hybrid's ``|F|`` by part on 10 000 fresh fields, as fractions of the analytic ``|F|``."""
    fixed = hybrid.whiten(STATISTICS[name], fiducial_fields(2000))
    model = hybrid_imnn(fixed)
    fields = fiducial_fields(4, 9)
    fixed_part = jax.vmap(model.model, (None, 0))(model.w, fields)[:, : model.n_fixed]
    model.fit(10.0, 0.1, rng=jax.random.key(2), patience=30, max_iterations=1000)
    # the fixed statistic is not trained
    np.testing.assert_allclose(jax.vmap(model.model, (None, 0))(model.w, fields)[:, : model.n_fixed], fixed_part)
    check = hybrid_imnn(fixed, n_s=10_000, state=model.state)
    result = check.hybrid_information(key=jax.random.key(3), n_bootstrap=200)
    return {part: float(getattr(result, part).detF) / ANALYTIC_DETF for part in result._fields}


def test_the_fine_power_spectrum_is_nearly_sufficient_and_the_network_adds_little():
    fraction = fit_and_measure("unit shells")
    assert fraction["fixed"] > 0.9, fraction
    assert fraction["union"] < 1.06, fraction  # never more than there is (within the noise of 10 000 fields)
    assert fraction["union"] < fraction["fixed"] + 0.06, fraction


def test_with_a_coarse_power_spectrum_the_network_recovers_the_missing_information():
    fraction = fit_and_measure("two bins")
    assert fraction["fixed"] < 0.8, fraction
    assert 0.85 < fraction["union"] < 1.05, fraction
    assert fraction["union"] > fraction["fixed"] + 0.15, fraction


def statistic_and_derivative(statistic, n, seed=5):
    """``statistic`` of ``n`` fields and its derivative, through the simulator."""
    keys = jax.random.split(jax.random.key(seed), n)
    of_field = lambda key, θ: statistic(FIELD.simulator(key, θ))
    return jax.jit(jax.vmap(lambda key: (of_field(key, θ_FID), jax.jacfwd(of_field, 1)(key, θ_FID))))(keys)


def test_whitening_gives_unit_covariance_and_keeps_every_fisher_figure():
    raw = STATISTICS["unit shells"]
    fields = fiducial_fields(3000)
    whitened = hybrid.whiten(raw, fields)
    t = jax.vmap(whitened)(fields)
    np.testing.assert_allclose(t.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(jnp.cov(t, rowvar=False), np.eye(t.shape[1]), atol=1e-3)
    F_raw = fisher.statistics(*statistic_and_derivative(raw, 2000)).F
    F_whitened = fisher.statistics(*statistic_and_derivative(whitened, 2000)).F
    np.testing.assert_allclose(F_whitened, F_raw, rtol=1e-3)


def test_hybrid_information_is_the_information_of_each_group_of_columns():
    x, dx_dθ = statistic_and_derivative(STATISTICS["unit shells"], 1000)  # 6 shells: call 3 fixed, 3 "network"
    result = hybrid.information(x, dx_dθ, 3, key=jax.random.key(0), n_bootstrap=100)
    for part, columns in [("fixed", slice(0, 3)), ("network", slice(3, None)), ("union", slice(None))]:
        expected = fisher.information(x[:, columns], dx_dθ[:, columns], key=jax.random.key(0), n_bootstrap=100)
        np.testing.assert_allclose(getattr(result, part).detF, expected.detF, rtol=1e-5, err_msg=part)
        np.testing.assert_allclose(getattr(result, part).detF_interval, expected.detF_interval, rtol=1e-5)
    assert str(result).count("|F| = ") == 3


def test_hybrid_errors_name_the_argument():
    with pytest.raises(ValueError, match="`Hybrid.fixed` should return a vector"):
        hybrid_imnn(lambda d: d[..., 0])
    with pytest.raises(ValueError, match="`n_summaries` .* should exceed the 2 entries"):
        imnn.SimulatorIMNN(
            n_s=100, n_d=100, n_params=2, n_summaries=2, input_shape=FIELD.input_shape, θ_fid=θ_FID,
            model=Hybrid(STATISTICS["two bins"], ModeWeighting()), optimiser=optax.adam(1e-2),
            key_or_state=jax.random.key(1), simulator=FIELD.simulator, verbose=False,
        )  # fmt: skip
    with pytest.raises(ValueError, match="`simulations` should hold more simulations"):
        hybrid.whiten(STATISTICS["unit shells"], fiducial_fields(4))
    x, dx_dθ = statistic_and_derivative(STATISTICS["unit shells"], 50)
    with pytest.raises(ValueError, match="`n_fixed` .* from 1 to n_summaries − 1 = 5"):
        hybrid.information(x, dx_dθ, 6, key=jax.random.key(0))
    plain = imnn.SimulatorIMNN(
        n_s=100, n_d=100, n_params=2, n_summaries=2, input_shape=FIELD.input_shape, θ_fid=θ_FID,
        model=ModeWeighting(), optimiser=optax.adam(1e-2), key_or_state=jax.random.key(1),
        simulator=FIELD.simulator, verbose=False,
    )  # fmt: skip
    with pytest.raises(ValueError, match="needs an IMNN whose `model` is an `imnn.hybrid.Hybrid`"):
        plain.hybrid_information(key=jax.random.key(0))


def test_the_plot_draws_three_bars_per_statistic_with_the_analytic_line():
    x, dx_dθ = statistic_and_derivative(STATISTICS["unit shells"], 200)
    result = hybrid.information(x, dx_dθ, 3, key=jax.random.key(0), n_bootstrap=50)
    ax = imnn.plotting.plot_hybrid_information({"a": result, "b": result}, expected_detF=ANALYTIC_DETF)
    assert len(ax.patches) == 6
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    assert any(np.allclose(line.get_ydata(), ANALYTIC_DETF) for line in ax.get_lines())
