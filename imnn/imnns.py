"""The in-memory IMNN classes: each picks a summary source and the data it reads.

Every class fits with :meth:`fit`, evaluates with :meth:`set_F_statistics`,
estimates with :meth:`get_estimate` and plots with :meth:`plot` (all from
:class:`imnn._core.IMNNBase`); they differ only in where simulations come from.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax

from . import _checks, finite_differences, sources
from ._core import IMNNBase, accepts_ascii_aliases


def gradient_layout(n_d: int, n_params: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of ``derivative`` for gradient IMNNs: ``(n_d, *input_shape, n_params)``."""
    return (n_d, *shape, n_params)


def numerical_layout(n_d: int, n_params: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of ``derivative`` for numerical-gradient IMNNs: ``(n_d, 2, n_params, *input_shape)``."""
    return (n_d, 2, n_params, *shape)


LAYOUT_NAMES = {
    gradient_layout: "(n_d, *input_shape, n_params)",
    numerical_layout: "(n_d, 2, n_params, *input_shape)",
}


def stored_simulations(
    layout: Callable[[int, int, tuple[int, ...]], tuple[int, ...]],
    n_s: int,
    n_d: int,
    n_params: int,
    input_shape: tuple[int, ...],
    fiducial: Any,
    derivative: Any,
    validation_fiducial: Any = None,
    validation_derivative: Any = None,
) -> tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, jax.Array] | None, bool]:
    """Checked ``(fiducial, derivative)`` training data, validation data (or ``None``), and
    whether ``derivative`` is one derivative of the mean (``layout`` without its ``n_d`` axis)
    rather than one per simulation."""
    n_s, n_d = _checks.positive_int("n_s", n_s), _checks.positive_int("n_d", n_d)
    n_params, shape = _checks.positive_int("n_params", n_params), _checks.input_shape(input_shape)
    per_simulation, per_simulation_name = layout(n_d, n_params, shape), LAYOUT_NAMES[layout]
    of_mean, of_mean_name = per_simulation[1:], per_simulation_name.replace("n_d, ", "")
    mean = getattr(derivative, "ndim", None) == len(of_mean)
    expected, name = (of_mean, of_mean_name) if mean else (per_simulation, per_simulation_name)
    forms = f"{per_simulation_name} = {per_simulation}, or {of_mean_name} = {of_mean} for the derivative of the mean"

    def check(fid, der, prefix=""):
        if hasattr(der, "shape") and tuple(der.shape) != expected:
            either = f"{name} = {expected} (the form of `derivative`)" if prefix else forms
            raise ValueError(f"`{prefix}derivative` should have shape {either}, but has {tuple(der.shape)}")
        return (
            _checks.array(f"{prefix}fiducial", fid, (n_s, *shape), "(n_s, *input_shape)"),
            _checks.array(f"{prefix}derivative", der, expected, name),
        )

    given = (validation_fiducial is not None, validation_derivative is not None)
    if any(given) and not all(given):
        missing = "validation_derivative" if given[0] else "validation_fiducial"
        raise ValueError(
            f"`validation_fiducial` and `validation_derivative` must be given together: `{missing}` is missing"
        )
    training = check(fiducial, derivative)
    validation = check(validation_fiducial, validation_derivative, "validation_") if all(given) else None
    _checks.same_dtype(
        [("fiducial", fiducial), ("derivative", derivative),
         ("validation_fiducial", validation_fiducial), ("validation_derivative", validation_derivative)]
    )  # fmt: skip
    return training, validation, mean


def simulator_source(
    n_s: int,
    n_d: int,
    n_params: int,
    n_summaries: int,
    input_shape: tuple[int, ...],
    θ_fid: Any,
    simulator: Callable[[jax.Array, jax.Array], jax.Array],
    derivative_mode: str,
) -> dict[str, Any]:
    """The summary source and data of a simulator-based IMNN (checked)."""
    if not callable(simulator):
        raise TypeError(f"`simulator` should be a function simulator(key, θ) but is {type(simulator).__name__}")
    if derivative_mode not in ("auto", "forward", "reverse"):
        raise ValueError(f"`derivative_mode` (={derivative_mode!r}) must be 'auto', 'forward' or 'reverse'")
    n_s, n_d = _checks.positive_int("n_s", n_s), _checks.positive_int("n_d", n_d)
    θ = _checks.vector("θ_fid", θ_fid, _checks.positive_int("n_params", n_params))
    shape = _checks.input_shape(input_shape)
    _checks.output_shape(
        "simulator", simulator, (jax.random.key(0), θ), shape, "a key and `θ_fid`",
        fix=f"change `simulator` or `input_shape` (={shape})", floats=True,
    )  # fmt: skip
    mode = sources.simulator_mode(derivative_mode, θ.shape[0], _checks.positive_int("n_summaries", n_summaries),
                                  math.prod(shape))  # fmt: skip
    return dict(source=sources.simulator(simulator, θ, n_s, n_d, mode), data=None, needs_key=True)


def gradient_source(
    n_s: int, n_d: int, n_params: int, input_shape: tuple[int, ...], fiducial: Any, derivative: Any,
    validation_fiducial: Any = None, validation_derivative: Any = None,
) -> dict[str, Any]:  # fmt: skip
    """The summary source and data of a gradient IMNN (checked)."""
    data, validation, mean = stored_simulations(
        gradient_layout, n_s, n_d, n_params, input_shape,
        fiducial, derivative, validation_fiducial, validation_derivative,
    )  # fmt: skip
    return dict(source=sources.gradient(n_d, mean), data=data, validation_data=validation)


def numerical_source(
    n_s: int, n_d: int, n_params: int, input_shape: tuple[int, ...], fiducial: Any, derivative: Any, δθ: Any,
    validation_fiducial: Any = None, validation_derivative: Any = None,
) -> dict[str, Any]:  # fmt: skip
    """The summary source, data and checked ``δθ`` of a numerical-gradient IMNN."""
    δθ = _checks.positive_vector("δθ", δθ, _checks.positive_int("n_params", n_params))
    data, validation, mean = stored_simulations(
        numerical_layout, n_s, n_d, n_params, input_shape,
        fiducial, derivative, validation_fiducial, validation_derivative,
    )  # fmt: skip
    return dict(source=sources.numerical(δθ, n_d, mean), data=data, validation_data=validation, δθ=δθ)


class SimulatorIMNN(IMNNBase):
    """IMNN fitted on fresh simulations drawn from ``simulator`` at every iteration.

    ``dx/dθ`` is the derivative of ``model∘simulator`` w.r.t. θ at ``θ_fid``, so the
    simulator must be differentiable in JAX. Its training |F| is already
    out-of-sample, so it is what early stopping monitors.

    Args:
        n_s: simulations per iteration for the mean and covariance.
        n_d: simulations (the first ``n_d`` of ``n_s``) whose derivatives are used.
        n_params: number of physical parameters.
        n_summaries: outputs of the network.
        input_shape: shape of one simulation.
        θ_fid: float(n_params) — fiducial parameters.
        model: stax ``(init, apply)`` pair, ``flax.linen``/``flax.nnx`` or ``equinox`` module,
            mapping one simulation to float(n_summaries).
        optimiser: ``optax.GradientTransformation`` or ``jax.example_libraries.optimizers`` triple.
        key_or_state: PRNG key for the weights, or a previous ``state``.
        simulator: ``simulator(key, θ: float(n_params)) -> float(*input_shape)``.
        derivative_mode: ``"forward"``, ``"reverse"`` or ``"auto"`` (the mode needing fewer
            network passes; see :func:`imnn.sources.simulator_mode`) to differentiate ``model∘simulator``.
        verbose: print a one-line summary after each fit.
    """

    @accepts_ascii_aliases
    def __init__(
        self,
        n_s: int,
        n_d: int,
        n_params: int,
        n_summaries: int,
        input_shape: tuple[int, ...],
        θ_fid: Any,
        model: Any,
        optimiser: Any,
        key_or_state: Any,
        simulator: Callable[[jax.Array, jax.Array], jax.Array],
        derivative_mode: sources.DerivativeMode = "auto",
        verbose: bool = True,
    ):
        super().__init__(
            n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model, optimiser, key_or_state,
            **simulator_source(n_s, n_d, n_params, n_summaries, input_shape, θ_fid, simulator, derivative_mode),
            verbose=verbose,
        )  # fmt: skip
        self.simulator = simulator


class GradientIMNN(IMNNBase):
    """IMNN fitted on stored simulations and their exact derivatives ``dd/dθ``.

    ``dx/dθ`` follows by the chain rule: one JVP of the network per parameter
    along the stored derivative, never the full input Jacobian. With a validation
    set, early stopping monitors the validation |F|.

    Args:
        n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model, optimiser, key_or_state:
            as for :class:`SimulatorIMNN`.
        fiducial: float(n_s, *input_shape) — simulations at ``θ_fid``.
        derivative: float(n_d, *input_shape, n_params) — ``dd/dθ`` of the first ``n_d``; or
            float(*input_shape, n_params) — ``dμ/dθ``, the derivative of the data's mean, used for
            each of them without copying (exact when the noise does not depend on θ; see
            :doc:`/mean_derivative`).
        validation_fiducial, validation_derivative: a second set of the same shapes.
        verbose: print a one-line summary after each fit.
    """

    @accepts_ascii_aliases
    def __init__(
        self,
        n_s: int,
        n_d: int,
        n_params: int,
        n_summaries: int,
        input_shape: tuple[int, ...],
        θ_fid: Any,
        model: Any,
        optimiser: Any,
        key_or_state: Any,
        fiducial: Any,
        derivative: Any,
        validation_fiducial: Any = None,
        validation_derivative: Any = None,
        verbose: bool = True,
    ):
        super().__init__(
            n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model, optimiser, key_or_state,
            **gradient_source(n_s, n_d, n_params, input_shape, fiducial, derivative,
                              validation_fiducial, validation_derivative),
            verbose=verbose,
        )  # fmt: skip
        self.fiducial, self.derivative = fiducial, derivative  # as given (0.3.2 names)
        self.validation_fiducial, self.validation_derivative = validation_fiducial, validation_derivative


class NumericalGradientIMNN(IMNNBase):
    """IMNN fitted on stored simulations with derivatives by finite differences.

    Args:
        n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model, optimiser, key_or_state:
            as for :class:`SimulatorIMNN`.
        fiducial: float(n_s, *input_shape) — simulations at ``θ_fid``.
        derivative: float(n_d, 2, n_params, *input_shape) — ``[:, 0, p]`` simulated at
            ``θ_fid − δθ/2`` and ``[:, 1, p]`` at ``θ_fid + δθ/2`` in parameter ``p`` only,
            each with the seed of the matching fiducial simulation; or float(2, n_params, *input_shape)
            — the data's mean at those points, when the noise does not depend on θ: each fiducial
            simulation ``d`` then stands for its own pair as ``d ∓ (m⁺ − m⁻)/2`` (see :doc:`/mean_derivative`).
        δθ: float(n_params) — the finite-difference steps (> 0).
        validation_fiducial, validation_derivative: a second set of the same shapes.
        verbose: print a one-line summary after each fit.
    """

    finite_difference_bias = finite_differences.finite_difference_bias

    @accepts_ascii_aliases
    def __init__(
        self,
        n_s: int,
        n_d: int,
        n_params: int,
        n_summaries: int,
        input_shape: tuple[int, ...],
        θ_fid: Any,
        model: Any,
        optimiser: Any,
        key_or_state: Any,
        fiducial: Any,
        derivative: Any,
        δθ: Any,
        validation_fiducial: Any = None,
        validation_derivative: Any = None,
        verbose: bool = True,
    ):
        parts = numerical_source(
            n_s, n_d, n_params, input_shape, fiducial, derivative, δθ, validation_fiducial, validation_derivative
        )
        self.δθ = parts.pop("δθ")
        super().__init__(
            n_s, n_d, n_params, n_summaries, input_shape, θ_fid, model, optimiser, key_or_state,
            **parts, verbose=verbose,
        )  # fmt: skip
        self.fiducial, self.derivative = fiducial, derivative  # as given (0.3.2 names)
        self.validation_fiducial, self.validation_derivative = validation_fiducial, validation_derivative
