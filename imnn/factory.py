"""``imnn.IMNN``: pick the IMNN class from the arguments given, or say clearly why none fits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ._core import accepts_ascii_aliases
from .aggregated import AggregatedGradientIMNN, AggregatedNumericalGradientIMNN, AggregatedSimulatorIMNN
from .datasets import DatasetGradientIMNN, DatasetNumericalGradientIMNN
from .imnns import GradientIMNN, NumericalGradientIMNN, SimulatorIMNN

# (where simulations come from, how they are executed) -> class
CLASSES: dict[tuple[str, str], type] = {
    ("simulator", "in memory"): SimulatorIMNN,
    ("gradient", "in memory"): GradientIMNN,
    ("numerical", "in memory"): NumericalGradientIMNN,
    ("simulator", "aggregated"): AggregatedSimulatorIMNN,
    ("gradient", "aggregated"): AggregatedGradientIMNN,
    ("numerical", "aggregated"): AggregatedNumericalGradientIMNN,
    ("gradient", "dataset"): DatasetGradientIMNN,
    ("numerical", "dataset"): DatasetNumericalGradientIMNN,
}


def _is_iterator_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(v, Iterator) for v in value)


def _kind(value: Any) -> str:
    """``list of ndarray``, ``ndarray``, … for messages about what was given instead of iterators."""
    if isinstance(value, (list, tuple)) and value:
        return f"a {type(value).__name__} of {type(value[0]).__name__}"
    return type(value).__name__


STORED = ("fiducial", "derivative", "validation_fiducial", "validation_derivative")
ITERATORS = ("main", "remaining", "validation_main", "validation_remaining")


def _check_not_empty(values: dict[str, Any]) -> None:
    """An empty list or tuple for any data argument is an error naming it (it cannot hold one iterator per device)."""
    for name, value in values.items():
        if isinstance(value, (list, tuple)) and len(value) == 0:
            instead = "" if name in ITERATORS else " (or an array of simulations)"
            raise ValueError(
                f"`{name}` is an empty {type(value).__name__}: give a list of iterators, one per device "
                f"(as many as `devices`){instead}"
            )


def _source_kind(given: dict[str, bool], δθ: Any) -> str:
    stored = [name for name in STORED if given[name]]
    iterators = [name for name in ITERATORS if given[name]]
    named = ", ".join(f"`{name}`" for name in stored + iterators)
    if given["simulator"]:
        if stored or iterators:
            raise ValueError(f"give either `simulator` or stored simulations, not both (also given: {named})")
        if δθ is not None:
            raise ValueError("`δθ` is only for numerical derivatives of stored simulations, not with `simulator`")
        return "simulator"
    if stored and iterators:
        raise ValueError(
            f"give either `main`/`remaining` iterators or `fiducial`/`derivative`, not both (given: {named})"
        )
    if iterators:
        if not given["main"]:
            raise ValueError("`main` (the iterators of simulations with derivatives) is required with `remaining`")
        if δθ is not None:
            raise ValueError(
                "`δθ` is not used with `main`/`remaining`: numerical derivatives use `fiducial`/`derivative`"
            )
        return "gradient"
    if given["fiducial"] != given["derivative"]:
        missing = "derivative" if given["fiducial"] else "fiducial"
        raise ValueError(f"`fiducial` and `derivative` must be given together: `{missing}` is missing")
    if not given["fiducial"]:
        raise ValueError("give `simulator`, or `fiducial` and `derivative` (with `δθ` for numerical derivatives)")
    return "numerical" if δθ is not None else "gradient"


def _missing(values: dict[str, Any]) -> str:
    """The names whose value is ``None``, as ```a`, `b``` (empty when none is)."""
    return ", ".join(f"`{name}`" for name, value in values.items() if value is None)


def _executor_kind(
    arrays: dict[str, Any], host: Any, devices: Any, n_per_device: Any, cache: Any, prefetch: Any
) -> str:
    """``"dataset"`` (iterator lists), ``"aggregated"`` (``host``, ``devices``, ``n_per_device``) or ``"in memory"``."""
    iterators = [name for name, value in arrays.items() if _is_iterator_list(value)]
    if iterators or arrays["main"] is not None:
        stored = [name for name, value in arrays.items() if value is not None and name not in iterators]
        if not iterators:
            raise TypeError(f"`main` should be a list of iterators, one per device, but is {_kind(arrays['main'])}")
        if stored and not (arrays["main"] is not None and stored == ["remaining"]):
            are, not_ = ("is a list", "is") if len(iterators) == 1 else ("are lists", "are")
            raise ValueError(
                f"{', '.join(f'`{n}`' for n in iterators)} {are} of iterators but "
                f"{', '.join(f'`{n}`' for n in stored)} {not_} not: give all as lists of iterators, one per device"
            )
        missing = _missing({"host": host, "devices": devices, "n_per_device": n_per_device})
        if missing:
            raise ValueError(f"iterator datasets need `host`, `devices` and `n_per_device` (missing {missing})")
        return "dataset"
    aggregation = {"host": host, "devices": devices, "n_per_device": n_per_device}
    given = [name for name, value in aggregation.items() if value is not None]
    if given and len(given) < 3:
        raise ValueError(
            f"aggregation needs `host`, `devices` and `n_per_device` together (missing {_missing(aggregation)})"
        )
    if not given and (cache is not None or prefetch is not None):
        raise ValueError(
            "`cache` and `prefetch` only apply to aggregated and dataset IMNNs (with `host`, `devices`, `n_per_device`)"
        )
    return "aggregated" if given else "in memory"


@accepts_ascii_aliases
def IMNN(
    n_s: int,
    n_d: int,
    n_params: int,
    n_summaries: int,
    input_shape: tuple[int, ...],
    θ_fid: Any,
    model: Any,
    optimiser: Any,
    key_or_state: Any,
    simulator: Any = None,
    fiducial: Any = None,
    derivative: Any = None,
    main: Any = None,
    remaining: Any = None,
    δθ: Any = None,
    validation_fiducial: Any = None,
    validation_derivative: Any = None,
    validation_main: Any = None,
    validation_remaining: Any = None,
    host: Any = None,
    devices: Any = None,
    n_per_device: Any = None,
    cache: Any = None,
    prefetch: Any = None,
    verbose: bool = True,
):
    """Build the IMNN that fits the data you have.

    - ``simulator`` → :class:`SimulatorIMNN` (fresh simulations each iteration);
    - ``fiducial`` and ``derivative`` arrays → :class:`GradientIMNN`, or
      :class:`NumericalGradientIMNN` when ``δθ`` is given;
    - with ``host``, ``devices`` and ``n_per_device`` → the ``Aggregated…`` variants;
    - lists of iterators, one per device (``main``/``remaining`` → :class:`DatasetGradientIMNN`,
      or ``fiducial``/``derivative`` with ``δθ`` → :class:`DatasetNumericalGradientIMNN`).

    Arguments are those of the chosen class; see :class:`SimulatorIMNN`,
    :class:`GradientIMNN` and :class:`NumericalGradientIMNN` for shapes.
    """
    given = {
        "simulator": simulator is not None, "fiducial": fiducial is not None,
        "derivative": derivative is not None, "main": main is not None, "remaining": remaining is not None,
        "validation_fiducial": validation_fiducial is not None,
        "validation_derivative": validation_derivative is not None,
        "validation_main": validation_main is not None, "validation_remaining": validation_remaining is not None,
    }  # fmt: skip
    _check_not_empty(
        dict(fiducial=fiducial, derivative=derivative, main=main, remaining=remaining,
             validation_fiducial=validation_fiducial, validation_derivative=validation_derivative,
             validation_main=validation_main, validation_remaining=validation_remaining)
    )  # fmt: skip
    source = _source_kind(given, δθ)
    arrays = {"fiducial": fiducial, "derivative": derivative, "main": main, "remaining": remaining}
    executor = _executor_kind(arrays, host, devices, n_per_device, cache, prefetch)
    if (source, executor) not in CLASSES:
        raise ValueError(f"no IMNN fits {source} derivatives with {executor} execution")
    if (source, executor) == ("gradient", "dataset") and main is None:
        raise ValueError(
            "lists of `fiducial`/`derivative` iterators are for numerical derivatives (give `δθ`); "
            "for exact derivatives give `main` (and `remaining`) iterators"
        )
    cls = CLASSES[(source, executor)]
    common = dict(
        n_s=n_s, n_d=n_d, n_params=n_params, n_summaries=n_summaries, input_shape=input_shape,
        θ_fid=θ_fid, model=model, optimiser=optimiser, key_or_state=key_or_state, verbose=verbose,
    )  # fmt: skip
    if executor != "in memory":
        common.update(host=host, devices=devices, n_per_device=n_per_device)
        if source != "simulator":
            common.update(prefetch=prefetch, cache=False if cache is None else cache)
    if source == "simulator":
        return cls(**common, simulator=simulator)
    if cls is DatasetGradientIMNN:
        return cls(
            **common, main=main, remaining=remaining,
            validation_main=validation_main, validation_remaining=validation_remaining,
        )  # fmt: skip
    stored = dict(
        fiducial=fiducial, derivative=derivative,
        validation_fiducial=validation_fiducial, validation_derivative=validation_derivative,
    )  # fmt: skip
    if source == "numerical":
        return cls(**common, **stored, δθ=δθ)
    return cls(**common, **stored)
