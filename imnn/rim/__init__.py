"""Recurrent Inference Machines (Putzky & Welling 2017): learned iterative solvers for ``y = F(x) + η``.

``RIM(dimensions, model, score_fn=...)`` with a network such as :class:`MLP` (vectors) or
:class:`Hourglass`/:class:`Unet` (1-3-D fields), then
``rim.fit(simulator=...)`` and ``rim.predict(y, *args)``. The maths is in
:mod:`imnn.rim.core`, the networks in :mod:`imnn.rim.models`; training runs on the
library's fit engine (:mod:`imnn.engine`).
"""

from .architectures import Hourglass, Unet
from .models import MLP
from .rim import RIM

__all__ = ["MLP", "RIM", "Hourglass", "Unet"]
