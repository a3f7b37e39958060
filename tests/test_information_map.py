"""Information across the prior: F(θ) of a fixed compressor against the analytic F(θ).

For n = 10 draws of N(μ, Σ) the analytic Fisher matrix is diag(n/Σ, n/(2Σ²)) at every θ,
so |F(θ)| = n²/(2Σ³). The exact-MLE summaries t = (mean d, mean d²) are sufficient at
every θ and must reproduce it; |F| estimated from n_s = 20 000 simulations is within a
few per cent of it.
"""

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
from helpers import fitted_quadratic

import imnn
from imnn import information_map as maps
from imnn.problems import GaussianMeanVariance

PROBLEM = GaussianMeanVariance(n_data=10)
POINTS = maps.grid(PROBLEM.θ_fid, {0: [-1.0, 0.5], 1: [0.5, 1.0, 2.0]})


def analytic_detF(θ):
    return PROBLEM.n_data**2 / (2 * np.asarray(θ)[:, 1] ** 3)


def sufficient(d):
    return jnp.stack([d.mean(), (d**2).mean()])


def test_grid_holds_every_combination_at_fiducial_elsewhere():
    np.testing.assert_allclose(POINTS[:3], [[-1.0, 0.5], [-1.0, 1.0], [-1.0, 2.0]])
    assert POINTS.shape == (6, 2)
    np.testing.assert_allclose(maps.grid([0.0, 1.0, 3.0], {1: [4.0, 5.0]}), [[0, 4, 3], [0, 5, 3]])
    with pytest.raises(ValueError, match="`values`"):
        maps.grid([0.0, 1.0], {2: [1.0]})


def test_exact_summaries_reproduce_the_analytic_information_everywhere():
    result = maps.information_map(sufficient, POINTS, simulator=PROBLEM.simulator, key=jax.random.key(0),
                                  n_s=20_000, reference=PROBLEM.fisher, progress=False)  # fmt: skip
    np.testing.assert_allclose(result.reference_detF, analytic_detF(POINTS), rtol=1e-5)
    np.testing.assert_allclose(result.detF, analytic_detF(POINTS), rtol=0.08)
    np.testing.assert_allclose(result.ratio, 1.0, rtol=0.08)
    for F, θ in zip(result.F, POINTS):
        np.testing.assert_allclose(np.diag(F), np.diag(PROBLEM.fisher(θ)), rtol=0.06)


@pytest.mark.parametrize("layout", ["gradient", "numerical"])
def test_user_simulations_at_each_point_give_the_same_answer(layout):
    simulations, δθ = [], None
    for i, θ in enumerate(POINTS):
        sims = GaussianMeanVariance(10, tuple(θ)).simulations(jax.random.key(i), 20_000, 20_000, δθ=(0.02, 0.02))
        derivative = sims.derivative if layout == "gradient" else sims.numerical_derivative
        simulations.append((sims.fiducial, derivative))
        δθ = sims.δθ if layout == "numerical" else None
    result = maps.information_map(sufficient, POINTS, simulations=simulations, δθ=δθ, progress=False)
    np.testing.assert_allclose(result.detF, analytic_detF(POINTS), rtol=0.08)


@pytest.fixture(scope="module")
def fitted():
    """An IMNN with quadratic features fitted at θ_fid = (0, 1)."""
    return fitted_quadratic(2000, patience=50, max_iterations=600)


def test_a_fitted_imnn_is_close_to_the_analytic_information_near_its_fiducial_point(fitted):
    near = maps.grid(PROBLEM.θ_fid, {1: [0.9, 1.0, 1.1]})
    result = fitted.information_map(near, simulator=PROBLEM.simulator, key=jax.random.key(3), n_s=20_000,
                                    reference=PROBLEM.fisher, progress=False)  # fmt: skip
    np.testing.assert_allclose(result.ratio, 1.0, atol=0.12)
    np.testing.assert_allclose(result.θ_fid, PROBLEM.θ_fid)


def test_a_baseline_map_is_a_reference(fitted):
    near = maps.grid(PROBLEM.θ_fid, {0: [-0.2, 0.2]})
    kwargs = dict(simulator=PROBLEM.simulator, key=jax.random.key(4), n_s=5000, progress=False)
    mean_only = maps.information_map(lambda d: jnp.stack([d.mean(), d[0]]), near, **kwargs)
    result = fitted.information_map(near, reference=mean_only, **kwargs)
    # (mean, one datum) carries only the mean's information: |F| of it is ~0 next to the IMNN's.
    assert np.all(result.ratio > 10)


def test_plots_draw_a_slice_and_a_grid(fitted):
    matplotlib.use("Agg")
    kwargs = dict(simulator=PROBLEM.simulator, key=jax.random.key(5), n_s=2000, reference=PROBLEM.fisher,
                  progress=False)  # fmt: skip
    line = fitted.information_map(maps.grid(PROBLEM.θ_fid, {1: [0.5, 1.0, 2.0]}), **kwargs)
    ax = imnn.plotting.plot_information_map(line, relative=False, parameter_names=["μ", "Σ"])
    assert ax.get_xlabel() == "Σ"
    np.testing.assert_allclose(ax.lines[0].get_ydata(), line.detF[np.argsort(line.θ[:, 1])])
    np.testing.assert_allclose(ax.lines[1].get_ydata(), analytic_detF(line.θ)[np.argsort(line.θ[:, 1])], rtol=1e-5)
    surface = fitted.information_map(maps.grid(PROBLEM.θ_fid, {0: [-0.5, 0.0, 0.5], 1: [0.5, 1.0, 2.0]}), **kwargs)
    ax = imnn.plotting.plot_information_map(surface)
    assert ax.get_xlabel() == "θ_0" and ax.get_ylabel() == "θ_1"
    assert len(ax.figure.axes) == 2  # the map and its colour bar


def test_bad_arguments_are_named(fitted):
    with pytest.raises(ValueError, match="`θ`"):
        maps.information_map(sufficient, np.zeros(3), simulator=PROBLEM.simulator, key=jax.random.key(0))
    with pytest.raises(ValueError, match="either `simulator`"):
        maps.information_map(sufficient, POINTS)
    with pytest.raises(ValueError, match="`key`"):
        maps.information_map(sufficient, POINTS, simulator=PROBLEM.simulator)
    with pytest.raises(ValueError, match="one \\(fiducial, derivative\\) per point"):
        maps.information_map(sufficient, POINTS, simulations=[])
    with pytest.raises(ValueError, match="`n_d`"):
        maps.information_map(sufficient, POINTS, simulator=PROBLEM.simulator, key=jax.random.key(0), n_s=10, n_d=20)
    with pytest.raises(ValueError, match="`reference` values"):
        maps.information_map(sufficient, POINTS[:1], simulator=PROBLEM.simulator, key=jax.random.key(0), n_s=50,
                             reference=[1.0, 2.0], progress=False)  # fmt: skip
    no_reference = maps.information_map(sufficient, POINTS[:2], simulator=PROBLEM.simulator, key=jax.random.key(0),
                                        n_s=50, progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="`relative=True`"):
        imnn.plotting.plot_information_map(no_reference, relative=True)
    with pytest.raises(ValueError, match="1-D slice or a 2-D grid"):
        imnn.plotting.plot_information_map(no_reference._replace(θ=np.zeros((2, 2))))
