"""Recognition-parametrised models (Walker, Soulat, Yu & Sahani, AISTATS 2023).

``RPM(latent, factors)`` with a latent family (:class:`Categorical`, :class:`Gaussian`,
:class:`DiagGaussian`, :class:`GaussMarkov` for time series) and one factor network per view
(:class:`MLP`, :class:`Linear` or your own), then ``model.fit(views)`` and
``model.posterior(views)``. The families are in
:mod:`imnn.rpm.families`, the objectives in :mod:`imnn.rpm.objectives`, the fit step and
normalisers in :mod:`imnn.rpm.training`; training runs on the library's fit engine.
"""

from .factors import MLP, Linear
from .families import Categorical, DiagGaussian, Gaussian
from .markov import GaussMarkov
from .rpm import RPM

__all__ = ["MLP", "RPM", "Categorical", "DiagGaussian", "GaussMarkov", "Gaussian", "Linear"]
