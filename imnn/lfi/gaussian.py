"""The Gaussian approximation to the posterior: N(θ̂, F⁻¹) around each quasi-maximum-likelihood estimate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _checks
from . import marginals as _marginals
from .base import LikelihoodFreeInference


class GaussianApproximation(LikelihoodFreeInference):
    """Posterior ≈ N(θ̂, F⁻¹) for each target's estimate θ̂, on the prior's grid.

    The Fisher matrix bounds the variance of any unbiased estimator, so this is the
    tightest Gaussian consistent with the information in the summaries; it ignores
    the prior's shape and any non-Gaussianity of the posterior.

    Args:
        parameter_estimates: float(n_params) or float(n_targets, n_params), e.g.
            ``model.get_estimate(target_data)``.
        invF: float(n_params, n_params) — ``model.invF`` — or one per target.
        prior: see :class:`LikelihoodFreeInference`.
        gridsize: grid points per parameter.
        ranges: ``[(low, high), …]`` grid bounds when the prior has none.

    Attributes:
        parameter_estimates: float(n_targets, n_params).
        invF: float(n_targets, n_params, n_params).
        marginals: the Gaussian's 1-D and 2-D marginals on the grid (see the base class).
    """

    def __init__(
        self,
        parameter_estimates: Any,
        invF: Any,
        prior: Any,
        gridsize: int | Sequence[int] = 100,
        ranges: Sequence[Sequence[float]] | None = None,
    ):
        super().__init__(prior, gridsize, ranges=ranges)
        estimates = np.asarray(parameter_estimates, dtype=float)
        estimates = estimates[None] if estimates.ndim == 1 else estimates
        if estimates.ndim != 2 or estimates.shape[1] != self.n_params:
            raise ValueError(
                f"`parameter_estimates` should have shape ({self.n_params},) or (n_targets, {self.n_params}) "
                f"but has {np.shape(parameter_estimates)}"
            )
        if not np.all(np.isfinite(estimates)):
            raise ValueError("`parameter_estimates` contains non-finite values")
        self.parameter_estimates = estimates
        self.n_targets = estimates.shape[0]
        self.invF = _checks.matrices_per_target("invF", invF, self.n_targets, self.n_params)
        self.marginals = self.get_marginals()

    def get_marginals(
        self,
        parameter_estimates: Any = None,
        invF: Any = None,
        ranges: Sequence[Any] | None = None,
        gridsize: int | Sequence[int] | None = None,
    ) -> _marginals.Marginals:
        """The Gaussian's 1-D and 2-D marginals on a grid (see :func:`imnn.lfi.marginals.gaussian`).

        Args:
            parameter_estimates: float(n_targets, n_params) (default :attr:`parameter_estimates`).
            invF: float(n_targets, n_params, n_params) (default :attr:`invF`).
            ranges: grid points per parameter (default :attr:`ranges`).
            gridsize: without ``ranges``, a grid of this many points over the prior's bounds instead.
        """
        estimates = self.parameter_estimates if parameter_estimates is None else parameter_estimates
        invF = self.invF if invF is None else invF
        return _marginals.gaussian(estimates, invF, self._grid(ranges, gridsize))
