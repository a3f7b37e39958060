"""The user-facing :class:`RPM`: recognition-parametrised models on the library's fit engine."""

from __future__ import annotations

import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import _checks, aggregation, engine, interrupts
from ..adapters import as_optimiser, describe
from . import diagnostics, families, objectives, store, training
from .factors import MLP, as_factors
from .markov import GaussMarkov
from .training import Model, RPMMetrics, Weights

Q_CHOICES = ("use_theta", "amortized", "saturated")
PROGRESS = ("objective", "val_objective")
NONFINITE_HINT = " (e.g. a learning rate too large, or factor networks fed unscaled data)"


def check_views(name: str, views: Any, n_views: int | None = None, item_shapes: list | None = None) -> tuple:
    """``views`` as a tuple of float32 arrays with a common leading axis (the items), checked."""
    if not isinstance(views, (tuple, list)) or not all(hasattr(v, "shape") for v in views):
        raise TypeError(f"`{name}` should be a tuple of J arrays (one per view, items first), but is {describe(views)}")
    if len(views) < 2:
        raise ValueError(f"`{name}` has {len(views)} view(s): an RPM needs J ≥ 2 views of each item")
    if n_views is not None and len(views) != n_views:
        raise ValueError(f"`{name}` has {len(views)} views, but the model has {n_views} factors (one per view)")
    arrays = []
    for j, view in enumerate(views):
        array = jnp.asarray(view, jnp.float32)
        if array.ndim < 1 or array.shape[0] != views[0].shape[0]:
            raise ValueError(f"`{name}[{j}]` has shape {tuple(view.shape)}, but every view should have the "
                             f"{views[0].shape[0]} items of `{name}[0]` on its first axis")  # fmt: skip
        if item_shapes is not None and array.shape[1:] != item_shapes[j]:
            raise ValueError(f"`{name}[{j}]` has items of shape {array.shape[1:]}, but the model was built "
                             f"for items of shape {item_shapes[j]}")  # fmt: skip
        if not bool(jnp.all(jnp.isfinite(array))):
            raise ValueError(f"`{name}[{j}]` holds non-finite values (NaN or inf)")
        arrays.append(array)
    if arrays[0].shape[0] == 0:
        raise ValueError(f"`{name}` holds no items")
    return tuple(arrays)


class RPM:
    """A recognition-parametrised model (Walker, Soulat, Yu & Sahani, AISTATS 2023) of J views
    ``x₁ … x_J`` of each item: ``p(X, Z) = p(Z) Πⱼ fⱼ(Z|xⱼ) p₀ⱼ(xⱼ) / Fⱼ(Z)``, with ``p₀ⱼ`` the
    empirical distribution of view ``j`` and ``Fⱼ(Z) = (1/N) Σₙ fⱼ(Z|xⱼⁿ)``. No decoder is written.

    Args:
        latent: :class:`~imnn.rpm.Categorical`, :class:`~imnn.rpm.Gaussian`,
            :class:`~imnn.rpm.DiagGaussian` or :class:`~imnn.rpm.GaussMarkov` (views ``(N, T, ...)``).
        factors: one network per view mapping ONE item to ``latent.n_raw`` numbers
            (:class:`~imnn.rpm.MLP`, :class:`~imnn.rpm.Linear`, or a flax/equinox/stax model).
        prior: ``None`` (learnt), or fixed: class probabilities float(K), ``(mean, cov)``, or a
            chain's transition matrix float(d, d) (zeros: an i.i.d. prior over steps).
        q: the posterior of continuous latents' bound, ``"use_theta"`` (``q ∝ p^{1−J} Πⱼ fⱼ``,
            exact when every ``Fⱼ = p``) or ``"amortized"`` (``q``'s natural parameters
            ``η₀ + increment(q_network(x₁ … x_J))`` from a network over the stacked, flattened views)
            or ``"saturated"`` (one free ``q`` per training item, learnt with the weights; for any
            other views optimised item by item, ``objectives.SATURATION_STEPS`` Adam steps: the
            tightest bound, at that cost). Discrete latents need none: their objective is exact.
        normaliser: ``"full"``, ``"batch"`` or ``"cache"`` (see :mod:`imnn.rpm.training`).
        key: PRNG key of the initial weights (default ``jax.random.key(0)``).
        q_network: the network of ``q="amortized"`` (default ``rpm.MLP((64, 64))``).

    Attributes:
        params: :class:`~imnn.rpm.training.Weights` (``None`` before the first fit).
        history: ``{"objective", "val_objective"}`` per step over all fits.
        prior: the learnt (or fixed) prior, see :attr:`prior`.
    """

    def __init__(self, latent: Any, factors: Any, prior: Any = None, q: str = "use_theta",
                 normaliser: str = "full", key: jax.Array | None = None, q_network: Any = None):  # fmt: skip
        if not isinstance(latent, (*families.FAMILIES.values(), GaussMarkov)):
            raise TypeError(f"`latent` should be rpm.Categorical(K), rpm.Gaussian(d), rpm.DiagGaussian(d) or "
                            f"rpm.GaussMarkov(T, d), but is {describe(latent)}")  # fmt: skip
        if not isinstance(factors, (list, tuple)) or len(factors) < 2:
            raise ValueError(f"`factors` should be a list of J ≥ 2 networks (one per view), but is {describe(factors)}")
        self.latent, self.factors = latent, list(factors)
        self.q = _checks.one_of("q", q, Q_CHOICES)
        if self.q != "use_theta" and (latent.discrete or getattr(latent, "chain", False)):
            raise ValueError(f"`q` (={q!r}) applies to Gaussian and DiagGaussian latents; a "
                             f"{type(latent).__name__} latent takes q='use_theta' (an exact posterior, or the "
                             "chain's smoother)")  # fmt: skip
        if q_network is not None and self.q != "amortized":
            raise ValueError("`q_network` is the network of q='amortized', but `q` is " + repr(q))
        self.q_network = (MLP((64, 64)) if q_network is None else q_network) if self.q == "amortized" else None
        self.normaliser = _checks.one_of("normaliser", normaliser, training.NORMALISERS)
        self._fixed_prior = None if prior is None else latent.fixed_prior(prior)
        self._key = jax.random.key(0) if key is None else _checks.key("key", key)
        if len(self.factors) == 2 and not latent.discrete:
            _checks.warn("with J = 2 views a continuous-latent RPM is not identifiable: its likelihood has a flat "
                         "ridge along which the latent scale trades between the two factors; use J ≥ 3 views "
                         "or compare fits only through their posteriors' affine-invariant summaries")  # fmt: skip
        self.params: Weights | None = None
        self.history: dict[str, np.ndarray] = {"objective": np.zeros(0), "val_objective": np.zeros(0)}
        self.item_shapes: list[tuple[int, ...]] | None = None
        self._bank = None  # the training normaliser: every training item's factor increments
        self._state: engine.FitState | None = None
        self._state_setting: tuple | None = None
        self._fits: dict[tuple, tuple] = {}

    @property
    def n_views(self) -> int:
        return len(self.factors)

    @property
    def prior(self) -> Any:
        """The prior, learnt or fixed, in the form ``prior=`` takes: class probabilities float(K),
        ``(mean float(d), cov float(d, d))``, or a chain's transition matrix float(d, d)."""
        if self.params is None:
            raise ValueError("this RPM has no prior yet: call `fit` first (or give `prior=` to fix one)")
        eta = self._model.prior(self.params)
        value = eta if getattr(self.latent, "chain", False) else self.latent.moments(eta)
        return jax.tree.map(np.asarray, value)

    # ---------------------------------------------------------------- building
    def _build(self, item_shapes: list[tuple[int, ...]]) -> None:
        self.item_shapes = [tuple(s) for s in item_shapes]
        steps = [s[1:] for s in self.item_shapes] if isinstance(self.latent, GaussMarkov) else self.item_shapes
        networks = as_factors(self.factors, steps, self.latent.n_raw)
        q_network = None
        if self.q_network is not None:
            stacked = (sum(math.prod(shape) for shape in self.item_shapes),)
            (q_network,) = as_factors([self.q_network], [stacked], self.latent.n_raw, name="q_network")
        self._model = Model(self.latent, tuple(networks), self._fixed_prior, q_network, self.q == "saturated")
        self._increments = jax.jit(self._model.increments)
        self._evaluate = {what: jax.jit(training.evaluator(self._model, what)) for what in training.EVALUATIONS}

    def _ensure(self, name: str, views: Any, training: bool = False) -> tuple:
        views = check_views(name, views, self.n_views, self.item_shapes)
        if isinstance(self.latent, GaussMarkov):
            for j, view in enumerate(views):
                T = self.latent.T
                if view.ndim < 2 or view.shape[1] != T:
                    raise ValueError(f"`{name}[{j}]` has shape {tuple(view.shape)}, but a GaussMarkov(T={T}) latent "
                                     f"needs views of shape (N, {T}, ...): the T axis second")  # fmt: skip
        if self.item_shapes is None:
            self._build([v.shape[1:] for v in views])
        if self.params is None:
            self.params = self._initial_weights(views[0].shape[0] if training else 0)
        return views

    def _initial_weights(self, n_items: int) -> Weights:
        """Fresh weights; a saturated ``q`` starts as the use_theta one of each of ``n_items`` training items."""
        keys = jax.random.split(self._key, self.n_views)
        q = None
        if self._model.q_network is not None:
            q = self._model.q_network.init(jax.random.fold_in(self._key, 1))
        elif self._model.saturated:
            q = jnp.zeros((n_items, self.latent.n_raw), jnp.float32)
        return Weights(
            factors=tuple(network.init(k) for network, k in zip(self._model.networks, keys)),
            prior=self.latent.init_prior() if self._fixed_prior is None else None,
            bank=None,
            q=q,
        )

    def _trained(self, what: str) -> None:
        if self._bank is None:
            raise ValueError(f"this RPM has not been fit yet: call `fit` before `{what}`")

    # --------------------------------------------------------------- inference
    def posterior(self, views: Any) -> Any:
        """``p(Z|X)`` of each item of ``views`` (any items: the normaliser is the training one).

        Returns:
            Categorical: probabilities float(N, K) (exact). Gaussian: ``(mean float(N, d), cov
            float(N, d, d))`` of ``q``. GaussMarkov: smoothed marginals ``(mean float(N, T, d),
            cov float(N, T, d, d))``.
        """
        self._trained("posterior")
        views = self._ensure("views", views)
        return self._evaluate["posterior"](self.params, self._bank, views)

    def objective(self, views: Any, per_item: bool = False) -> float | np.ndarray:
        """Mean over the items of ``views`` of the objective maximised (nats per datum), with the
        training normaliser: the exact ``log w = log p(X) + J log N`` for discrete latents, its
        lower bound for continuous ones. ``per_item=True``: each item's, float(N)."""
        self._trained("objective")
        return self._mean_or_items(self._evaluate["objective"], self._ensure("views", views), per_item)

    def exact_objective(self, views: Any, per_item: bool = False) -> float | np.ndarray:
        """Mean (or, ``per_item=True``, each item's float(N)) exact ``log w`` of ``views`` by quadrature
        (Gaussian latents of dimension ≤ 2; for Categorical latents :meth:`objective` is exact already)."""
        self._trained("exact_objective")
        if self.latent.discrete:
            return self.objective(views, per_item)
        if getattr(self.latent, "chain", False) or self.latent.dim not in objectives.QUADRATURE_POINTS:
            raise ValueError(f"`exact_objective` integrates on a grid, for latents of dimension ≤ 2, "
                             f"but this one has dimension {self.latent.dim}")  # fmt: skip
        return self._mean_or_items(self._evaluate["exact"], self._ensure("views", views), per_item)

    def _mean_or_items(self, evaluate: Any, views: tuple, per_item: bool) -> float | np.ndarray:
        values = evaluate(self.params, self._bank, views)
        return np.asarray(values) if per_item else float(jnp.mean(values))

    def diagnostics(self, views: Any = None, key: jax.Array | None = None) -> dict[str, Any]:
        """What to check after a fit (see :func:`imnn.rpm.diagnostics.report`); ``views`` default to none
        (only the normaliser's checks), give the training views for the bound's gap and latent usage."""
        self._trained("diagnostics")
        checked = None if views is None else self._ensure("views", views)
        return diagnostics.report(self, checked, jax.random.key(1) if key is None else _checks.key("key", key))

    # ------------------------------------------------------------------ fitting
    def fit(self, views: Any, *, steps: int = 1000, batch_size: int | None = None, learning_rate: float = 1e-3,
            optimizer: optax.GradientTransformation | None = None, validation: Any = None,
            patience: int | None = None, key: jax.Array | None = None, print_rate: int | None = None,
            progress: bool = True, devices: list | None = None) -> dict[str, np.ndarray]:  # fmt: skip
        """Maximise the objective on ``views`` with Adam (or ``optimizer``).

        Args:
            views: tuple of J arrays, float(N, *item_shape_j).
            steps: most optimiser steps.
            batch_size: items per step (distinct, drawn at random); ``None``: all N. Continuous
                latents cost ``J·batch_size·N`` log-partitions per step with the full or cache normaliser.
            validation: views of held-out items; their objective (training normaliser) picks the
                weights kept and drives early stopping.
            patience: steps without a better validation objective before stopping (needs ``validation``).
            key: PRNG key of the minibatches (default: continues the previous fit's stream).
            print_rate: steps between progress-bar updates (default: about once a second).
            progress: show a progress bar.
            devices: fit data-parallel over these devices: the items of ``views`` (a multiple of
                their number) split across them, the weights replicated; the result equals one device's.

        Returns:
            ``history``: the objective per step over all fits (and ``val_objective``). A second
            ``fit`` with the same settings continues the optimiser and compiles nothing.
        """
        steps = _checks.positive_int("steps", steps)
        train = self._ensure("views", views, training=True)
        n = train[0].shape[0]
        if self._model.saturated and self.params.q.shape[0] != n:
            raise ValueError(f"`views` has {n} items, but this RPM's q='saturated' keeps one q per training "
                             f"item of the {self.params.q.shape[0]} it was fit on: continue on those")  # fmt: skip
        batch_size = n if batch_size is None else _checks.positive_int("batch_size", batch_size)
        if batch_size > n:
            raise ValueError(f"`batch_size` (={batch_size}) exceeds the {n} items of `views`")
        if patience is not None:
            patience = _checks.positive_int("patience", patience)
            if validation is None:
                raise ValueError("`patience` needs `validation` views: early stopping watches their objective")
        val_views = None if validation is None else self._ensure("validation", validation)
        if optimizer is None:
            transformation, name = optax.adam(_checks.positive_float("learning_rate", learning_rate)), learning_rate
        elif isinstance(optimizer, optax.GradientTransformation):
            transformation, name = optimizer, id(optimizer)
        else:
            raise TypeError(f"`optimizer` should be an optax.GradientTransformation, but is {describe(optimizer)}")
        place, sharding, devices = aggregation.placement(devices, n, "the number of items of `views`")
        if sharding is not None:
            train = jax.device_put(train, sharding)
        setting = (name, batch_size, val_views is not None, n, tuple(d.id for d in devices))
        chunk, monitor, wrapped = self._compiled(setting, transformation, batch_size, val_views is not None)
        state = place(self._start_state(setting, wrapped, train, key))
        val_views = None if val_views is None else place(val_views)
        settings = engine.Settings(
            hyper=(), patience=jnp.int32(steps + 1 if patience is None else patience),
            min_iterations=jnp.int32(0), max_iterations=jnp.int32(steps),
        )  # fmt: skip
        outcome = engine.run(
            chunk, state, settings, train, None if val_views is None else (val_views, train), monitor=monitor,
            max_iterations=steps, print_rate=print_rate, show_progress=progress,
        )  # fmt: skip
        with interrupts.deferred():
            self._absorb(outcome, setting, train, val_views is not None)
        if outcome.error is not None:
            raise outcome.error
        return self.history

    def _compiled(self, setting: tuple, transformation: Any, batch_size: int, validated: bool) -> tuple:
        if setting not in self._fits:
            monitor = engine.Monitor(
                metrics=RPMMetrics, score=lambda metrics: metrics.objective,
                validate=jax.jit(training.validation(self._model, self.normaliser)) if validated else None,
                progress=PROGRESS, nonfinite_hint=NONFINITE_HINT,
            )  # fmt: skip
            wrapped = training.with_bank(as_optimiser(transformation))
            loss_and_grad = training.loss_and_grad(self._model, self.normaliser, batch_size)
            self._fits[setting] = (engine.make_chunk(loss_and_grad, wrapped, monitor), monitor, wrapped)
        return self._fits[setting]

    def _start_state(self, setting: tuple, wrapped: Any, train: tuple, key: Any) -> engine.FitState:
        previous = self._state
        stream = engine.fit_key(key, previous, self._key)
        if previous is not None and self._state_setting == setting:
            return previous._replace(key=stream, best_score=jnp.float32(-jnp.inf))
        bank = self._increments(self.params.factors, train) if self.normaliser == "cache" else None
        return engine.fresh_state(self.params._replace(bank=bank), wrapped, stream)

    def _absorb(self, outcome: engine.Outcome, setting: tuple, train: tuple, validated: bool) -> None:
        s = outcome.state
        self._state, self._state_setting = s, setting
        kept = s.best_w if validated and bool(jnp.isfinite(s.best_score)) else s.w
        self.params = kept._replace(bank=None)
        self._bank = self._increments(self.params.factors, train)
        values = outcome.history.get("objective", np.zeros(0))
        val_values = outcome.history.get("val_objective", np.full(len(values), np.nan))
        self.history = {
            "objective": np.concatenate([self.history["objective"], values]),
            "val_objective": np.concatenate([self.history["val_objective"], val_values]),
        }

    # --------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write the configuration, weights, training normaliser and history to ``path`` (atomically)."""
        self._trained("save")
        store.save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, factors: Any = None, q_network: Any = None) -> RPM:
        """The RPM saved at ``path``. Built-in factors (:class:`MLP`, :class:`Linear`) are rebuilt from
        the file; give ``factors`` (and an amortised q's ``q_network``) when the saved model used
        networks of your own."""
        return store.load(cls, path, factors, q_network)
