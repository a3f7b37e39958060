"""Likelihood-free inference on IMNN summaries.

- :class:`GaussianApproximation` — N(θ̂, F⁻¹) around each estimate;
- :class:`ApproximateBayesianComputation` — rejection ABC from the prior;
- :class:`PopulationMonteCarlo` — ABC with importance-weighted populations and a shrinking ϵ;
- :class:`NeuralPosteriorEstimation` — a conditional normalising flow (flowjax);
- :func:`iterate_fiducial` — refit an IMNN at the target's estimate until it settles;
- :func:`calibrate` — rank statistics, expected coverage and TARP of any of them over many targets.

All share :class:`LikelihoodFreeInference`: a numpyro prior, a parameter grid,
marginals and corner plots (``marginal_plot``, ``scatter_plot``).
"""

from .abc import ApproximateBayesianComputation
from .base import LikelihoodFreeInference
from .calibration import Calibration, calibrate, draw_targets, plot_calibration, posterior_samples
from .fiducial import FiducialIteration, iterate_fiducial
from .gaussian import GaussianApproximation
from .npe import NeuralPosteriorEstimation
from .pmc import PopulationMonteCarlo
from .priors import Prior, as_prior
from .simulate import F_distance, container, euclidean_distance

__all__ = [
    "ApproximateBayesianComputation",
    "Calibration",
    "F_distance",
    "FiducialIteration",
    "GaussianApproximation",
    "LikelihoodFreeInference",
    "NeuralPosteriorEstimation",
    "PopulationMonteCarlo",
    "Prior",
    "as_prior",
    "calibrate",
    "container",
    "draw_targets",
    "euclidean_distance",
    "iterate_fiducial",
    "plot_calibration",
    "posterior_samples",
]
