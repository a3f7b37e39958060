"""imnn — Information Maximising Neural Networks in JAX.

The easy path is :func:`IMNN` (or one of the classes it returns). The pieces it
is built from are importable for power users: :mod:`imnn.fisher` (statistics,
loss, estimate), :mod:`imnn.sources` (how summaries are made),
:mod:`imnn.executors` and :mod:`imnn.aggregation` (how they are evaluated) and
:mod:`imnn.engine` (the fit loop).
"""

from . import aggregation, engine, executors, fisher, plotting, sources, utils
from .adapters import OptimiserState
from .aggregated import AggregatedGradientIMNN, AggregatedNumericalGradientIMNN, AggregatedSimulatorIMNN
from .factory import IMNN
from .imnns import GradientIMNN, NumericalGradientIMNN, SimulatorIMNN

__version__ = "0.1.0"

__all__ = [
    "IMNN",
    "AggregatedGradientIMNN",
    "AggregatedNumericalGradientIMNN",
    "AggregatedSimulatorIMNN",
    "GradientIMNN",
    "NumericalGradientIMNN",
    "OptimiserState",
    "SimulatorIMNN",
    "aggregation",
    "engine",
    "executors",
    "fisher",
    "plotting",
    "sources",
    "utils",
]
