"""imnn — Information Maximising Neural Networks in JAX.

The easy path is :func:`IMNN` (or one of the classes it returns). The pieces it
is built from are importable for power users: :mod:`imnn.fisher` (statistics,
loss, estimate), :mod:`imnn.sources` (how summaries are made),
:mod:`imnn.executors`, :mod:`imnn.aggregation` and :mod:`imnn.streaming` (how they
are evaluated), :mod:`imnn.loaders` (per-device iterators over arrays on disk) and
:mod:`imnn.engine` (the fit loop); :mod:`imnn.finite_differences` and
:mod:`imnn.information_map` check a fitted compressor (step bias, information across the prior);
:mod:`imnn.hybrid` puts a network on top of a fixed statistic.
"""

from . import (
    aggregation,
    engine,
    executors,
    finite_differences,
    fisher,
    hybrid,
    information_map,
    lfi,
    loaders,
    plotting,
    sources,
    streaming,
    utils,
)  # fmt: skip
from .adapters import OptimiserState
from .aggregated import AggregatedGradientIMNN, AggregatedNumericalGradientIMNN, AggregatedSimulatorIMNN
from .datasets import DatasetGradientIMNN, DatasetNumericalGradientIMNN
from .factory import IMNN
from .imnns import GradientIMNN, NumericalGradientIMNN, SimulatorIMNN
from .tfrecords import TFRecords

__version__ = "0.1.0"

__all__ = [
    "IMNN",
    "AggregatedGradientIMNN",
    "AggregatedNumericalGradientIMNN",
    "AggregatedSimulatorIMNN",
    "DatasetGradientIMNN",
    "DatasetNumericalGradientIMNN",
    "GradientIMNN",
    "NumericalGradientIMNN",
    "OptimiserState",
    "SimulatorIMNN",
    "TFRecords",
    "aggregation",
    "engine",
    "executors",
    "finite_differences",
    "fisher",
    "hybrid",
    "information_map",
    "lfi",
    "loaders",
    "plotting",
    "sources",
    "streaming",
    "utils",
]
