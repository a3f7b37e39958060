"""Population Monte Carlo ABC (Beaumont et al. 2009): a shrinking ϵ with importance-weighted populations.

Each iteration sets ϵ to a percentile of the current population's distances and
regenerates the whole population from the Gaussian-kernel mixture around it,
``q(θ) = Σ_j w_j N(θ; θ_j, 2 Cov_w)``, truncated to the prior's support, keeping
proposals whose summaries fall within ϵ. The new importance weights are
``w_i ∝ p(θ_i) / q(θ_i)``, which makes every population a properly weighted sample
of the ABC posterior at its ϵ. When the fraction of proposals accepted falls below
``acceptance_ratio``, shrinking ϵ further costs more than it gains: the PMC stops.

The pure pieces (:func:`propose`, :func:`log_importance_weights`) are jitted once per
object; the loop over iterations runs in Python so each iteration can draw as many
batches of simulations as it needs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from .. import _checks
from .abc import ApproximateBayesianComputation
from .simulate import container, distances_to_targets


class Population(NamedTuple):
    """One target's weighted population.

    Attributes:
        θ: float(n_points, n_params).
        summaries: float(n_points, n_summaries).
        distances: float(n_points).
        log_weights: float(n_points), normalised (``logsumexp = 0``).
        ϵ: the acceptance distance all of them satisfy.
    """

    θ: np.ndarray
    summaries: np.ndarray
    distances: np.ndarray
    log_weights: np.ndarray
    ϵ: float


def propose(
    key: jax.Array, θ: jax.Array, log_weights: jax.Array, chol: jax.Array, *, n: int, max_samples: int,
    log_prior: Callable[[jax.Array], jax.Array],
) -> tuple[jax.Array, jax.Array]:  # fmt: skip
    """``n`` draws from the kernel mixture around ``θ`` float(m, n_params), redrawn while outside the prior.

    Returns:
        ``(θ_new: float(n, n_params), outside: bool(n))`` — ``outside`` marks draws still outside
        the prior's support after ``max_samples`` attempts (they must not be accepted).
    """

    def draw(key: jax.Array) -> jax.Array:
        parent_key, noise_key = jax.random.split(key)
        parents = jax.random.categorical(parent_key, log_weights, shape=(n,))
        return θ[parents] + jax.random.normal(noise_key, (n, θ.shape[1]), θ.dtype) @ chol.T

    def outside(θ_new: jax.Array) -> jax.Array:
        return ~jnp.isfinite(log_prior(θ_new))

    def redraw(state: tuple) -> tuple:
        key, θ_new, attempts = state
        key, sub = jax.random.split(key)
        return key, jnp.where(outside(θ_new)[:, None], draw(sub), θ_new), attempts + 1

    key, sub = jax.random.split(key)
    _, θ_new, _ = jax.lax.while_loop(
        lambda state: jnp.any(outside(state[1])) & (state[2] < max_samples), redraw, (key, draw(sub), 1)
    )
    return θ_new, outside(θ_new)


def log_importance_weights(
    θ_new: jax.Array, θ: jax.Array, log_weights: jax.Array, chol: jax.Array,
    log_prior: Callable[[jax.Array], jax.Array],
) -> jax.Array:  # fmt: skip
    """Normalised ``log w_i = log p(θ_i) − log Σ_j w_j N(θ_i; θ_j, LLᵀ)``, float(n) for θ_new float(n, n_params).

    The Gaussian's normalisation is the same for every term, so it cancels.
    """

    def log_mixture(point: jax.Array) -> jax.Array:
        whitened = jax.scipy.linalg.solve_triangular(chol, (point - θ).T, lower=True)
        return jax.nn.logsumexp(log_weights - 0.5 * jnp.sum(whitened**2, axis=0))

    log_w = log_prior(θ_new) - jax.lax.map(log_mixture, θ_new, batch_size=256)
    return log_w - jax.nn.logsumexp(log_w)


def kernel_cholesky(θ: np.ndarray, log_weights: np.ndarray) -> np.ndarray:
    """Cholesky factor of twice the weighted covariance of a population θ float(n, n_params)."""
    covariance = 2 * np.atleast_2d(np.cov(θ.T, aweights=np.exp(log_weights)))
    try:
        return np.linalg.cholesky(covariance)
    except np.linalg.LinAlgError:
        raise RuntimeError(
            f"the PMC population has collapsed (weighted covariance {covariance.tolist()} is singular): "
            "use more points or a larger percentile"
        ) from None


class PopulationMonteCarlo(ApproximateBayesianComputation):
    """ABC with populations that move towards the posterior as ϵ shrinks (see the module docstring).

    Constructor arguments as :class:`ApproximateBayesianComputation`; with ``simulator=None`` a call
    raises a ``ValueError`` (every iteration simulates at new parameters).

    Attributes:
        parameters, summaries, distances: containers whose ``all`` is float(n_targets, n_points, …)
            (distances float(n_targets, n_points)), ``accepted[i]`` target i's final population
            and ``parameters.weights[i]`` its importance weights (summing to one).
        ϵ: float(n_targets) — the acceptance distance of each final population.
        acceptance_reached: float(n_targets) — accepted / proposed in each target's last iteration.
        iterations, total_draws: int(n_targets) — iterations and simulations over all calls.
    """

    def __init__(self, target_data: Any, prior: Any, simulator: Callable | None, compressor: Callable, F: Any = None,
                 gridsize: int | list[int] = 100, distance_measure: Callable | None = None, **kwargs: Any):  # fmt: skip
        super().__init__(target_data, prior, simulator, compressor, gridsize, F, distance_measure, **kwargs)
        log_prior = self._prior.log_prob
        self._propose = jax.jit(functools.partial(propose, log_prior=log_prior), static_argnames=("n", "max_samples"))
        self._log_weights = jax.jit(functools.partial(log_importance_weights, log_prior=log_prior))
        self._populations: list[Population] | None = None
        self.ϵ = np.full(self.n_targets, np.nan)
        self.acceptance_reached = np.full(self.n_targets, np.nan)
        self.iterations = np.zeros(self.n_targets, dtype=int)
        self.total_draws = np.zeros(self.n_targets, dtype=int)

    def __call__(
        self,
        rng: jax.Array,
        n_points: int,
        percentile: float | None = None,
        acceptance_ratio: float = 0.1,
        max_iteration: int = 10,
        max_acceptance: float = 1,
        max_samples: int = int(1e5),
        n_initial_points: int | None = None,
        n_parallel_simulations: int | None = None,
        proposed: Any = None,
        summaries: Any = None,
        distances: Any = None,
        smoothing: float | None = None,
        replace: bool = False,
    ) -> tuple[container, container, container]:
        """Run the PMC for every target.

        Args:
            rng: PRNG key.
            n_points: population size (per target).
            percentile: ϵ of each iteration as this percentile (0–100] of the population's distances
                (default 75).
            acceptance_ratio: stop once an iteration accepts fewer than this fraction of its proposals.
            max_iteration: most iterations in this call.
            max_acceptance: an iteration gives up after ``max_acceptance · n_points / acceptance_ratio``
                proposals (its acceptance is then below the ratio) and the previous population is kept.
            max_samples: attempts at drawing each proposal inside the prior's support.
            n_initial_points: start from the ``n_points`` closest of this many prior simulations.
            n_parallel_simulations: proposals simulated per batch (default ``n_points``).
            proposed, summaries, distances: start from premade float(n, n_params), float(n, n_summaries)
                (and float(n_targets, n)) simulations instead.
            smoothing: Gaussian smoothing (grid cells) of the weighted marginal histograms.
            replace: start afresh even though an earlier call left populations.

        Without ``n_initial_points`` or ``proposed``, an earlier call's populations are continued.

        Returns:
            ``(parameters, distances, summaries)`` containers.
        """
        if self.simulator is None:
            raise ValueError(
                "PopulationMonteCarlo was built with simulator=None, but every PMC iteration simulates at newly "
                "proposed parameters, so it needs a `simulator`; premade `proposed` and `summaries` only seed the "
                "first population. To use only simulations made beforehand, run "
                "ApproximateBayesianComputation(..., simulator=None, ...)(ϵ, parameters=…, summaries=…)"
            )
        rng = _checks.key("rng", rng)
        n_points = _checks.positive_int("n_points", n_points)
        percentile = 75.0 if percentile is None else float(percentile)
        if not 0 < percentile <= 100:
            raise ValueError(f"`percentile` (={percentile}) must be in (0, 100]")
        if not 0 < acceptance_ratio < 1:
            raise ValueError(f"`acceptance_ratio` (={acceptance_ratio}) must be in (0, 1)")
        max_iteration = _checks.non_negative_int("max_iteration", max_iteration)
        max_acceptance = _checks.positive_float("max_acceptance", max_acceptance)
        max_samples = _checks.positive_int("max_samples", max_samples)
        batch = _checks.positive_int("n_parallel_simulations", n_parallel_simulations or n_points)
        rng, key = jax.random.split(rng)
        populations = self._initial_populations(
            key, n_points, n_initial_points, proposed, summaries, distances, replace
        )
        if replace or n_initial_points is not None or proposed is not None:
            self.iterations[:], self.total_draws[:] = 0, 0
        limit = int(np.ceil(max_acceptance * n_points / acceptance_ratio))
        for i, key in enumerate(jax.random.split(rng, self.n_targets)):
            populations[i], self.acceptance_reached[i], iterations, draws = self._move(
                key, populations[i], i, percentile, acceptance_ratio, max_iteration, limit, batch, max_samples
            )
            self.iterations[i] += iterations
            self.total_draws[i] += draws
        self._populations = populations
        self.set_accepted(smoothing)
        return self.parameters, self.distances, self.summaries

    def _initial_populations(
        self, key: jax.Array, n_points: int, n_initial_points: int | None, proposed: Any, summaries: Any,
        distances: Any, replace: bool,
    ) -> list[Population]:  # fmt: skip
        if n_initial_points is not None:
            n_initial_points = _checks.positive_int("n_initial_points", n_initial_points)
            if n_initial_points < n_points:
                raise ValueError(f"`n_initial_points` (={n_initial_points}) must be at least `n_points` (={n_points})")
            proposed, summaries = self.get_samples(key, n_initial_points)
            distances = None
        elif proposed is not None or summaries is not None:
            if proposed is None or summaries is None:
                raise ValueError("pass both `proposed` and `summaries` (premade simulations)")
            proposed = _checks.array("proposed", proposed, (np.shape(proposed)[0], self.n_params))
            summaries = _checks.array("summaries", summaries, (proposed.shape[0], self.n_summaries))
            if proposed.shape[0] < n_points:
                raise ValueError(f"`proposed` has {proposed.shape[0]} simulations, fewer than `n_points` (={n_points})")
        elif self._populations is not None and not replace:
            return list(self._populations)
        else:
            raise ValueError(
                "The PMC needs a starting population: pass `n_initial_points` (prior simulations to run), or premade "
                "`proposed` and `summaries`"
            )
        if distances is None:
            distances = distances_to_targets(
                self.distance_measure, jnp.asarray(summaries), self.target_summaries, self.F
            )
        distances = _checks.array("distances", np.asarray(distances, float), (self.n_targets, proposed.shape[0]))
        populations = []
        for d in distances:
            closest = np.argsort(d)[:n_points]
            uniform = np.full(n_points, -np.log(n_points))
            populations.append(Population(np.asarray(proposed)[closest], np.asarray(summaries)[closest], d[closest],
                                          uniform, float(d[closest[-1]])))  # fmt: skip
        return populations

    def _move(
        self, key: jax.Array, population: Population, target: int, percentile: float, acceptance_ratio: float,
        max_iteration: int, limit: int, batch: int, max_samples: int,
    ) -> tuple[Population, float, int, int]:  # fmt: skip
        """Iterate one target's population; returns it with the last acceptance, iterations and draws."""
        n_points = population.θ.shape[0]
        acceptance, iterations, total_draws = np.nan, 0, 0
        bar = tqdm(total=max_iteration, desc=f"PMC target {target + 1}", leave=False)
        while iterations < max_iteration:
            ϵ = float(np.percentile(population.distances, percentile))
            chol = jnp.asarray(kernel_cholesky(population.θ, population.log_weights))
            θ_old, log_w_old = jnp.asarray(population.θ), jnp.asarray(population.log_weights)
            kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
            n_accepted = draws = 0
            while n_accepted < n_points and draws < limit:
                key, propose_key, simulate_key = jax.random.split(key, 3)
                θ_new, outside = self._propose(propose_key, θ_old, log_w_old, chol, n=batch, max_samples=max_samples)
                summaries = self._simulations.summarise(simulate_key, θ_new)
                distances = self.distance_measure(summaries, self.target_summaries[target], self.F[target])
                accept = np.asarray((distances < ϵ) & ~outside)
                kept.append((np.asarray(θ_new)[accept], np.asarray(summaries)[accept], np.asarray(distances)[accept]))
                n_accepted += int(accept.sum())
                draws += batch
            acceptance, total_draws = n_accepted / draws, total_draws + draws
            if n_accepted < n_points:
                break  # this ϵ is too costly to fill: keep the last complete population
            θ, summaries, distances = (np.concatenate(parts)[:n_points] for parts in zip(*kept))
            log_w = np.asarray(self._log_weights(jnp.asarray(θ), θ_old, log_w_old, chol))
            population = Population(θ, summaries, distances, log_w, ϵ)
            iterations += 1
            bar.update()
            bar.set_postfix(ϵ=f"{ϵ:.3g}", acceptance=f"{acceptance:.3f}")
            if acceptance < acceptance_ratio:
                break
        bar.close()
        return population, acceptance, iterations, total_draws

    def set_samples(self, parameters: Any, summaries: Any, distances: Any = None, replace: bool = False) -> None:
        """Refused: a PMC population carries importance weights that loose simulations do not have."""
        raise TypeError(
            "PopulationMonteCarlo.set_samples would add simulations without importance weights to the "
            "populations; seed a run with them instead: pmc(rng, n_points, proposed=parameters, summaries=summaries), "
            "or keep them in an ApproximateBayesianComputation (its set_samples adds to its simulations)"
        )

    def set_accepted(self, smoothing: float | None = None) -> None:
        """Fill the containers from the current populations and compute the weighted marginals."""
        populations = self._populations
        self.ϵ = np.array([p.ϵ for p in populations])
        for box, field in ((self.parameters, "θ"), (self.summaries, "summaries"), (self.distances, "distances")):
            box.accepted = [getattr(p, field) for p in populations]
            box.all = np.stack(box.accepted)
            box.rejected = None
            box.n_accepted = [p.θ.shape[0] for p in populations]
            box.size = box.n_accepted[0]
            box.ϵ = self.ϵ
        self.parameters.weights = [np.exp(p.log_weights) for p in populations]
        self.marginals = self.get_marginals(smoothing=smoothing)
