"""Neural posterior estimation: a conditional normalising flow q(θ | summaries) fitted to prior-predictive pairs.

Simulations from the prior give pairs (θ_i, x_i = g(f(θ_i))); maximising Σ log q(θ_i | x_i)
makes q approach the posterior p(θ | x) for *every* x at once (it is amortised), so
any number of targets costs one training. The flow (``flowjax``) works in an unbounded
space: parameters with finite prior bounds are mapped by ``logit((θ − low)/(high − low))``
and then standardised, summaries are standardised, so samples always respect the bounds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import _checks
from . import marginals as _marginals
from .base import LikelihoodFreeInference
from .priors import support_bounds
from .simulate import container, from_prior, simulations


class Standardise(NamedTuple):
    """The invertible map between parameters (or summaries) and the flow's space.

    Attributes:
        low, high: float(n) bounds (``±inf`` where a coordinate is unbounded).
        shift, scale: float(n) standardisation after the logit.
    """

    low: jax.Array
    high: jax.Array
    shift: jax.Array
    scale: jax.Array

    def forward(self, values: jax.Array) -> jax.Array:
        bounded = jnp.isfinite(self.low) & jnp.isfinite(self.high)
        unit = (values - jnp.where(bounded, self.low, 0.0)) / jnp.where(bounded, self.high - self.low, 1.0)
        return (
            jnp.where(bounded, jax.scipy.special.logit(jnp.clip(unit, 1e-7, 1 - 1e-7)), values) - self.shift
        ) / self.scale

    def inverse(self, z: jax.Array) -> jax.Array:
        bounded = jnp.isfinite(self.low) & jnp.isfinite(self.high)
        u = z * self.scale + self.shift
        return jnp.where(bounded, self.low + (self.high - self.low) * jax.nn.sigmoid(u), u)


def standardiser(values: jax.Array, low: Any = None, high: Any = None) -> Standardise:
    """A :class:`Standardise` fitted to ``values`` float(n, d), with optional bounds float(d)."""
    d = values.shape[1]
    low = jnp.full(d, -jnp.inf) if low is None else jnp.asarray(low, values.dtype)
    high = jnp.full(d, jnp.inf) if high is None else jnp.asarray(high, values.dtype)
    unit = Standardise(low, high, jnp.zeros(d), jnp.ones(d))
    mapped = unit.forward(values)
    return unit._replace(shift=mapped.mean(0), scale=jnp.maximum(mapped.std(0), 1e-12))


class NeuralPosteriorEstimation(LikelihoodFreeInference):
    """Posterior samples for each target from a conditional normalising flow.

    Args:
        target_data, prior, simulator, compressor, gridsize, ranges, batch_size: as
            :class:`~imnn.lfi.ApproximateBayesianComputation`; with ``simulator=None`` a call
            trains only on premade ``parameters`` and ``summaries``.
        flow: an untrained ``flowjax`` conditional distribution with event shape (n_params,)
            and ``cond_dim = n_summaries``; default: a masked autoregressive flow with
            rational-quadratic splines.

    Attributes:
        parameters: container; ``accepted[i]`` holds target i's posterior samples
            float(n_samples, n_params) and ``all`` stacks them.
        training: ``(θ, summaries)`` pairs the flow was fitted to.
        flow: the fitted flow (in the standardised space; use :meth:`sample`).
        losses: ``{"train": [...], "val": [...]}`` per epoch.
    """

    def __init__(
        self,
        target_data: Any,
        prior: Any,
        simulator: Callable | None,
        compressor: Callable,
        gridsize: int | Sequence[int] = 100,
        flow: Any = None,
        ranges: Sequence[Sequence[float]] | None = None,
        batch_size: int = 10_000,
    ):
        super().__init__(prior, gridsize, ranges=ranges)
        self.simulator, self.compressor, self.flow = simulator, compressor, flow
        self._simulations = simulations(target_data, self._prior, simulator, compressor, batch_size)
        self.target_summaries = self._simulations.target_summaries
        self.n_targets, self.n_summaries = self.target_summaries.shape
        self.parameters = container()
        self.training = self.losses = None
        self._maps: tuple[Standardise, Standardise] | None = None

    def __call__(
        self,
        rng: jax.Array,
        n_simulations: int | None = 10_000,
        n_samples: int = 5_000,
        parameters: Any = None,
        summaries: Any = None,
        smoothing: float | None = None,
        max_epochs: int = 200,
        max_patience: int = 10,
        learning_rate: float = 5e-4,
        training_batch_size: int = 256,
        show_progress: bool = True,
    ) -> container:
        """Simulate from the prior, fit the flow, and sample the posterior of every target.

        Args:
            rng: PRNG key.
            n_simulations: prior simulations to train on (ignored with premade pairs).
            n_samples: posterior samples per target.
            parameters, summaries: premade training pairs float(n, n_params), float(n, n_summaries).
            smoothing: Gaussian smoothing (grid cells) of the marginal histograms.
            max_epochs, max_patience, learning_rate, training_batch_size, show_progress:
                ``flowjax.train.fit_to_data`` settings (early stopping on 10 % held out).

        Returns:
            The ``parameters`` container.
        """
        from flowjax.train import fit_to_data

        rng = _checks.key("rng", rng)
        simulation_key, flow_key, fit_key, sample_key = jax.random.split(rng, 4)
        if parameters is not None or summaries is not None:
            if parameters is None or summaries is None:
                raise ValueError("pass both premade `parameters` and `summaries`")
            θ = jnp.asarray(_checks.array("parameters", parameters, (np.shape(parameters)[0], self.n_params)))
            x = jnp.asarray(_checks.array("summaries", summaries, (θ.shape[0], self.n_summaries)))
        else:
            θ, x = from_prior(self._simulations, simulation_key, _checks.positive_int("n_simulations", n_simulations))
        finite = jnp.all(jnp.isfinite(x), axis=1)
        if not bool(finite.all()):
            _checks.warn(
                f"{int((~finite).sum())} of {θ.shape[0]} simulations have non-finite summaries and are left out "
                "of the training set"
            )
            θ, x = θ[finite], x[finite]
        self.training = (θ, x)
        bounds = support_bounds(self.prior)
        self._maps = (standardiser(θ, *(bounds or (None, None))), standardiser(x))
        flow = self.flow if self.flow is not None else default_flow(flow_key, self.n_params, self.n_summaries)
        self.flow, self.losses = fit_to_data(
            fit_key, flow, data=(self._maps[0].forward(θ), self._maps[1].forward(x)),
            max_epochs=_checks.positive_int("max_epochs", max_epochs),
            max_patience=_checks.positive_int("max_patience", max_patience),
            learning_rate=_checks.positive_float("learning_rate", learning_rate),
            batch_size=_checks.positive_int("training_batch_size", training_batch_size),
            show_progress=show_progress,
        )  # fmt: skip
        samples = np.asarray(self.sample(sample_key, self.target_summaries, n_samples))
        self.parameters.all = samples
        self.parameters.accepted = list(samples)
        self.parameters.n_accepted = [n_samples] * self.n_targets
        self.parameters.size = n_samples
        self.marginals = _marginals.from_samples(self.parameters.accepted, self.ranges, smoothing=smoothing)
        return self.parameters

    def sample(self, rng: jax.Array, summaries: Any, n_samples: int) -> jax.Array:
        """Posterior samples float(n, n_samples, n_params) for summaries float(n, n_summaries) (or one)."""
        if self._maps is None:
            raise RuntimeError("the flow is not fitted yet: call the NeuralPosteriorEstimation object first")
        n_samples = _checks.positive_int("n_samples", n_samples)
        summaries = jnp.atleast_2d(jnp.asarray(summaries))
        θ_map, x_map = self._maps
        conditions = x_map.forward(summaries)
        keys = jax.random.split(_checks.key("rng", rng), conditions.shape[0])
        z = jax.vmap(lambda key, condition: self.flow.sample(key, (n_samples,), condition=condition))(keys, conditions)
        return θ_map.inverse(z)


def default_flow(key: jax.Array, n_params: int, n_summaries: int) -> Any:
    """A masked autoregressive flow with rational-quadratic splines, conditioned on the summaries."""
    from flowjax.bijections import RationalQuadraticSpline
    from flowjax.distributions import Normal
    from flowjax.flows import masked_autoregressive_flow

    return masked_autoregressive_flow(
        key, base_dist=Normal(jnp.zeros(n_params)), transformer=RationalQuadraticSpline(knots=8, interval=4),
        cond_dim=n_summaries,
    )  # fmt: skip
