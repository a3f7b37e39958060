"""Likelihood-free inference on IMNN summaries.

- :class:`GaussianApproximation` — N(θ̂, F⁻¹) around each estimate;
- :class:`ApproximateBayesianComputation` — rejection ABC from the prior;
- :class:`PopulationMonteCarlo` — ABC with importance-weighted populations and a shrinking ϵ;
- :class:`NeuralPosteriorEstimation` — a conditional normalising flow (flowjax);
- :func:`iterate_fiducial` — refit an IMNN at the target's estimate until it settles.

All share :class:`LikelihoodFreeInference`: a numpyro prior, a parameter grid,
marginals and corner plots (``marginal_plot``, ``scatter_plot``).
"""

from .abc import ApproximateBayesianComputation
from .base import LikelihoodFreeInference
from .fiducial import FiducialIteration, iterate_fiducial
from .gaussian import GaussianApproximation
from .npe import NeuralPosteriorEstimation
from .pmc import PopulationMonteCarlo
from .priors import Prior, as_prior
from .simulate import F_distance, container, euclidean_distance

__all__ = [
    "ApproximateBayesianComputation",
    "F_distance",
    "FiducialIteration",
    "GaussianApproximation",
    "LikelihoodFreeInference",
    "NeuralPosteriorEstimation",
    "PopulationMonteCarlo",
    "Prior",
    "as_prior",
    "container",
    "euclidean_distance",
    "iterate_fiducial",
]
