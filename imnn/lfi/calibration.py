"""Are the posteriors calibrated? Rank statistics, expected coverage and TARP over many targets.

Draw ``θ_true`` from the prior, simulate a target at each (:func:`draw_targets`), run any
posterior of :mod:`imnn.lfi` on all of them, and :func:`calibrate` it. Each diagnostic is
the empirical CDF of a quantity that is uniform on [0, 1] when the posterior is right:

- simulation-based calibration: the posterior mass below ``θ_true`` in each parameter (its
  fractional rank), whose histogram is flat;
- expected coverage of central intervals (per parameter) and of highest-posterior-density
  regions (joint; density from the posterior's own samples by a Gaussian kernel estimate):
  the credibility level at which ``θ_true`` enters the region;
- TARP (Lemos et al. 2023): the posterior mass closer than ``θ_true`` to a random
  reference point (distances in units of the prior's box).

A coverage curve below the diagonal means intervals that are too narrow (over-confident),
above it too wide (under-confident). The curves come with the simultaneous 99 %
Kolmogorov–Smirnov band of a calibrated posterior, and :attr:`Calibration.diagnosis`
names the direction whenever a curve leaves it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from .. import _checks
from .priors import as_prior

KS_99 = 1.628  # the 99 % point of the Kolmogorov distribution: sup |ECDF − CDF| · √n
LEVELS = np.linspace(0, 1, 101)
TARGETS_PER_CALL = 16  # targets per jitted call (one progress-bar step each)


class Calibration(NamedTuple):
    """What :func:`calibrate` measured over ``n_targets`` targets.

    Attributes:
        ranks: float(n_targets, n_params) — posterior mass below ``θ_true`` per parameter.
        hpd_credibility: float(n_targets) — the level at which ``θ_true`` enters the HPD region.
        tarp_credibility: float(n_targets) — the posterior mass closer than ``θ_true`` to the reference point.
        levels: float(n_levels) — the credibility levels of the curves.
        central: float(n_levels, n_params) — coverage of central intervals at each level.
        hpd, tarp: float(n_levels) — coverage of HPD regions and TARP's expected coverage.
        band: half-width of the 99 % band around the diagonal (``1.63/√n_targets``).
        parameter_names: labels for plots.
    """

    ranks: np.ndarray
    hpd_credibility: np.ndarray
    tarp_credibility: np.ndarray
    levels: np.ndarray
    central: np.ndarray
    hpd: np.ndarray
    tarp: np.ndarray
    band: float
    parameter_names: tuple[str, ...]

    @property
    def n_targets(self) -> int:
        return self.ranks.shape[0]

    @property
    def diagnosis(self) -> dict[str, str]:
        """``"calibrated"``, ``"over-confident"`` or ``"under-confident"`` for every curve.

        Keys: ``"central <name>"`` per parameter, ``"hpd"`` and ``"tarp"``. A curve is
        miscalibrated when it leaves the 99 % band; which side of the diagonal it lies on gives
        the direction.
        """
        curves = {f"central {name}": self.central[:, i] for i, name in enumerate(self.parameter_names)}
        verdicts = {name: _verdict(curve, self.levels, self.band) for name, curve in curves.items()}
        verdicts["hpd"] = _verdict(self.hpd, self.levels, self.band)
        verdicts["tarp"] = _verdict(self.tarp, self.levels, self.band, s_shaped=True)
        return verdicts


def _verdict(coverage: np.ndarray, levels: np.ndarray, band: float, s_shaped: bool = False) -> str:
    """Direction of a miscalibrated curve: below the diagonal is over-confident. TARP's curve
    of an over-confident posterior is S-shaped instead (the truth's credibility piles up at 0
    and 1), above the diagonal below level ½ and under it above."""
    deviation = coverage - levels
    if np.max(np.abs(deviation)) <= band:
        return "calibrated"
    if s_shaped:
        over = deviation[levels < 0.5].mean() > deviation[levels > 0.5].mean()
    else:
        over = deviation.mean() < 0
    return "over-confident" if over else "under-confident"


def draw_targets(
    prior: Any, simulator: Callable[[jax.Array, jax.Array], jax.Array], n_targets: int, key: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """``(θ_true: float(n_targets, n_params), data: float(n_targets, *input_shape))`` from the prior.

    ``simulator(key, θ: float(n, n_params)) -> float(n, *input_shape)`` is the batch simulator
    the inference classes take.
    """
    parameter_key, simulation_key = jax.random.split(_checks.key("key", key))
    θ = as_prior(prior).sample(parameter_key, _checks.positive_int("n_targets", n_targets))
    return θ, simulator(simulation_key, θ)


def posterior_samples(posterior: Any, key: jax.Array | None = None, n_samples: int = 1000) -> tuple[list, list]:
    """Each target's samples float(n_i, n_params) and weights float(n_i) from an :mod:`imnn.lfi` posterior.

    The Gaussian approximation is sampled (``n_samples`` per target, ``key`` needed); ABC's
    accepted draws, PMC's weighted populations and NPE's samples are read as they are.
    """
    from .gaussian import GaussianApproximation

    if isinstance(posterior, GaussianApproximation):
        if key is None:
            raise ValueError("`key` must be a PRNG key to sample the Gaussian approximation")
        n = _checks.positive_int("n_samples", n_samples)
        z = jax.random.normal(_checks.key("key", key), (posterior.n_targets, n, posterior.n_params))
        cholesky = np.linalg.cholesky(posterior.invF)
        samples = posterior.parameter_estimates[:, None] + np.einsum("tij,tnj->tni", cholesky, np.asarray(z))
        return list(samples), [np.ones(n)] * posterior.n_targets
    accepted = getattr(getattr(posterior, "parameters", None), "accepted", None)
    if not accepted:
        raise ValueError(
            f"{type(posterior).__name__} has no posterior samples yet: run it (e.g. `abc(ϵ=…, …)`) before calibrating"
        )
    weights = getattr(posterior.parameters, "weights", None) or [np.ones(len(s)) for s in accepted]
    if min(len(s) for s in accepted) == 0:
        raise ValueError("some targets have no accepted samples: loosen ϵ or simulate more before calibrating")
    return [np.asarray(s) for s in accepted], [np.asarray(w) for w in weights]


def calibrate(
    posterior: Any,
    θ_true: Any,
    *,
    key: jax.Array | None = None,
    n_samples: int = 1000,
    max_samples: int = 2000,
    samples: Any = None,
    weights: Any = None,
    prior: Any = None,
    parameter_names: Any = None,
    progress: bool = True,
) -> Calibration:
    """Rank statistics, expected coverage and TARP of a posterior over its targets.

    Args:
        posterior: a run :mod:`imnn.lfi` object whose targets were simulated at ``θ_true``
            (e.g. from :func:`draw_targets`); or ``None`` with ``samples``.
        θ_true: float(n_targets, n_params).
        key: PRNG key (TARP's reference points; sampling the Gaussian approximation).
        n_samples: samples per target drawn from the Gaussian approximation.
        max_samples: a random subset of at most this many of each target's samples is used
            (the density estimate costs ``max_samples²`` per target).
        samples, weights: instead of a posterior object, float(n_targets, n_samples, n_params)
            samples (or a list of float(n_i, n_params)) and optional weights of the same layout.
        prior: the prior (default ``posterior.prior``): its box scales TARP's distances.
        parameter_names: labels for plots and :attr:`Calibration.diagnosis`.
        progress: show a progress bar.
    """
    key = jax.random.key(0) if key is None else _checks.key("key", key)
    sample_key, reference_key, subset_key = jax.random.split(key, 3)
    if posterior is not None:
        samples, weights = posterior_samples(posterior, sample_key, n_samples)
        prior = posterior.prior if prior is None else prior
    elif samples is None:
        raise ValueError("give a run `posterior` or its `samples`")
    if prior is None:
        raise ValueError("`prior` must be given with `samples`: its box scales TARP's distances")
    box = as_prior(prior)
    θ_true = np.asarray(θ_true, dtype=float)
    samples, weights = _subsets(samples, weights, _checks.positive_int("max_samples", max_samples), subset_key)
    padded, padded_weights = _padded(samples, weights, θ_true)
    scale = box.high - box.low
    unit = (padded - box.low) / scale, (θ_true - box.low) / scale  # the prior's box is the unit cube
    references = np.asarray(jax.random.uniform(reference_key, θ_true.shape))
    per_target = [
        _credibilities(*(jnp.asarray(a[i : i + TARGETS_PER_CALL]) for a in (*unit, padded_weights, references)))
        for i in tqdm(range(0, len(θ_true), TARGETS_PER_CALL), desc="calibration", disable=not progress)
    ]
    ranks, hpd, tarp = (np.concatenate([np.asarray(p[k]) for p in per_target]) for k in range(3))
    names = tuple(parameter_names) if parameter_names is not None else tuple(f"θ_{i}" for i in range(θ_true.shape[1]))
    if len(names) != θ_true.shape[1]:
        raise ValueError(f"`parameter_names` should name {θ_true.shape[1]} parameters but names {len(names)}")
    return Calibration(
        ranks=ranks, hpd_credibility=hpd, tarp_credibility=tarp, levels=LEVELS,
        central=np.stack([_ecdf(np.abs(2 * r - 1)) for r in ranks.T], axis=1),
        hpd=_ecdf(hpd), tarp=_ecdf(tarp), band=KS_99 / np.sqrt(len(θ_true)), parameter_names=names,
    )  # fmt: skip


def _ecdf(values: np.ndarray) -> np.ndarray:
    """Fraction of ``values`` at or below each of :data:`LEVELS`."""
    return np.mean(values[None, :] <= LEVELS[:, None], axis=1)


def _subsets(samples: Any, weights: Any, max_samples: int, key: jax.Array) -> tuple[list, list | None]:
    """At most ``max_samples`` of each target's samples (and their weights), drawn without replacement."""
    generator = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
    chosen = [np.arange(len(s)) if len(s) <= max_samples else np.sort(generator.choice(len(s), max_samples, False))
              for s in samples]  # fmt: skip
    subset = [np.asarray(s)[keep] for s, keep in zip(samples, chosen)]
    return subset, None if weights is None else [np.asarray(w)[keep] for w, keep in zip(weights, chosen)]


def _padded(samples: Any, weights: Any, θ_true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Samples float(n_targets, n_max, n_params) and weights float(n_targets, n_max), zero-weight padded."""
    n_targets, n_params = θ_true.shape if θ_true.ndim == 2 else (None, None)
    if n_targets is None or len(samples) != n_targets:
        raise ValueError(
            f"`θ_true` should have shape (n_targets, n_params) with one row per target of the posterior "
            f"({len(samples)} targets) but has shape {θ_true.shape}"
        )
    weights = [np.ones(len(s)) for s in samples] if weights is None else weights
    n_max = max(len(s) for s in samples)
    padded, padded_weights = np.zeros((n_targets, n_max, n_params)), np.zeros((n_targets, n_max))
    for i, (s, w) in enumerate(zip(samples, weights)):
        s, w = np.asarray(s, dtype=float), np.asarray(w, dtype=float)
        if s.ndim != 2 or s.shape[1] != n_params or w.shape != (len(s),):
            raise ValueError(f"target {i}: samples should be float(n, {n_params}) with weights float(n), got "
                             f"{s.shape} and {w.shape}")  # fmt: skip
        padded[i, : len(s)], padded_weights[i, : len(s)] = s, w / w.sum()
    return padded, padded_weights


@jax.jit
def _credibilities(samples, θ_true, weights, references):
    """Per target (one at a time: the kernel estimate is n_samples² numbers): fractional ranks
    float(n, n_params), HPD and TARP credibility float(n) of ``θ_true``."""
    return jax.lax.map(lambda arguments: _one_target(*arguments), (samples, θ_true, weights, references))


def _one_target(samples, θ_true, weights, reference):
    ranks = jnp.sum(weights[:, None] * (samples < θ_true), axis=0)
    at_samples, at_truth = _kde_log_density(samples, weights, θ_true)
    hpd = jnp.sum(weights * (at_samples > at_truth))
    closer = jnp.linalg.norm(samples - reference, axis=1) < jnp.linalg.norm(θ_true - reference)
    return ranks, hpd, jnp.sum(weights * closer)


def _kde_log_density(samples, weights, point):
    """Gaussian kernel estimate (Scott's bandwidth per dimension) of the weighted samples' density,
    at each sample (leaving itself out, as ``point`` is not among them) and at ``point``."""
    mean = weights @ samples
    std = jnp.sqrt(weights @ (samples - mean) ** 2)
    n_effective = 1 / jnp.sum(weights**2)
    bandwidth = jnp.maximum(std, 1e-12) * n_effective ** (-1 / (samples.shape[1] + 4))
    z, z_point = samples / bandwidth, point / bandwidth
    squared = jnp.sum(z**2, 1)
    distances = squared[:, None] + squared[None] - 2 * z @ z.T  # (n, n) without an (n, n, n_params) array
    log_kernel = jnp.where(jnp.eye(len(z), dtype=bool), -jnp.inf, -0.5 * distances)
    at_samples = jax.scipy.special.logsumexp(log_kernel, axis=1, b=weights[None])
    at_point = jax.scipy.special.logsumexp(-0.5 * jnp.sum((z - z_point) ** 2, 1), b=weights)
    return at_samples, at_point


def plot_calibration(result: Calibration, bins: int = 10, figsize: tuple[float, float] | None = None,
                     filename: str | None = None) -> Any:  # fmt: skip
    """Rank histograms (one per parameter, with the 99 % band of a flat histogram), the coverage
    curves of central intervals and HPD regions, and TARP's curve, each with its 99 % band.

    Returns:
        The axes, a numpy array of shape (2, max(n_params, 2)).
    """
    import matplotlib.pyplot as plt
    from scipy.stats import binom

    n_params = result.ranks.shape[1]
    columns = max(n_params, 2)
    _, ax = plt.subplots(2, columns, figsize=figsize or (3.2 * columns, 6.4), squeeze=False)
    low, high = binom.ppf([0.005, 0.995], result.n_targets, 1 / bins)
    for i, name in enumerate(result.parameter_names):
        ax[0, i].axhspan(low, high, color="grey", alpha=0.3, label="99 % band")
        ax[0, i].hist(result.ranks[:, i], bins=bins, range=(0, 1), histtype="step", color="C0")
        ax[0, i].set_xlabel(f"rank of {name}")
    ax[0, 0].set_ylabel("targets")
    ax[0, 0].legend(frameon=False, fontsize="small")
    for axis in ax[0, n_params:]:
        axis.set_visible(False)
    curves = [(ax[1, 0], [(f"central {name}", result.central[:, i]) for i, name in enumerate(result.parameter_names)]
               + [("HPD", result.hpd)], "coverage"), (ax[1, 1], [("TARP", result.tarp)], "TARP coverage")]
    for axis, lines, ylabel in curves:
        axis.fill_between(result.levels, result.levels - result.band, result.levels + result.band, color="grey",
                          alpha=0.3, label="99 % band")  # fmt: skip
        axis.plot([0, 1], [0, 1], color="black", linestyle="dashed")
        for n, (label, curve) in enumerate(lines):
            axis.plot(result.levels, curve, color=f"C{n}", label=label)
        axis.set_xlabel("credibility level")
        axis.set_ylabel(ylabel)
        axis.legend(frameon=False, fontsize="small")
    for axis in ax[1, 2:]:
        axis.set_visible(False)
    ax[0, 0].figure.tight_layout()
    if filename is not None:
        ax[0, 0].figure.savefig(filename, bbox_inches="tight")
    return ax
