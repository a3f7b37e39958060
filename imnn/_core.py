"""The shell shared by every IMNN class: configuration, latest state, and delegation.

A concrete class only chooses a summary source, the data it reads and an
executor; everything here works the same for all of them.
"""

from __future__ import annotations

import copy
import functools
import os
import unicodedata
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _checks, _compat, engine, executors, fisher, hybrid, interrupts, persistence, plotting
from . import information_map as information_maps
from .adapters import OptimiserState, as_network, as_optimiser, initial_state
from .sources import Source

ASCII_ALIASES = {
    "theta_fid": "θ_fid",
    "delta_theta": "δθ",
    "lam": "λ",
    "lambda_": "λ",
    "epsilon": "ϵ",
}
HISTORY_FIELDS = fisher.Metrics._fields


def accepts_ascii_aliases(fn: Callable) -> Callable:
    """Let ``fn`` be called with ASCII names (``theta_fid=``) for its Greek arguments."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        renamed: dict[str, Any] = {}
        for name, value in kwargs.items():
            # Python stores identifiers NFKC-normalised: ϵ (U+03F5) is the parameter ε.
            target = unicodedata.normalize("NFKC", ASCII_ALIASES.get(name, name))
            if target in renamed:
                raise TypeError(f"`{name}` and `{target}` name the same argument; give only one")
            renamed[target] = value
        return fn(*args, **renamed)

    return wrapper


class History(dict):
    """The fit history: 1-D arrays by name, also reachable by ASCII name (``Lambda2``)."""

    def __missing__(self, name: str):
        greek = name.replace("Lambda", "Λ")
        if greek != name and greek in self:
            return self[greek]
        raise KeyError(name)


def _empty_history(validate: bool) -> History:
    names = list(HISTORY_FIELDS) + ([f"val_{n}" for n in HISTORY_FIELDS] if validate else [])
    history = History({name: np.zeros(0, np.float32) for name in names})
    history["max_detF"] = -np.inf
    return history


def _with_inverse_F(stats: fisher.FisherStatistics) -> tuple[fisher.FisherStatistics, jax.Array]:
    return stats, jnp.linalg.inv(stats.F)


NONFINITE_HINT = (
    " (a singular covariance or Fisher matrix, e.g. summaries that do not vary or carry no information, "
    "or non-finite simulations)"
)


def fisher_monitor(summaries: Callable, validate: bool) -> engine.Monitor:
    """The IMNN's :class:`engine.Monitor`: Fisher metrics, maximising ``|F|`` (of the
    validation summaries from ``summaries(w, data, key)`` when ``validate``)."""

    def validation_metrics(w, val_data, key, λ, α):
        return fisher.loss_from_statistics(fisher.statistics(*summaries(w, val_data, key)), λ, α)[1]

    return engine.Monitor(
        metrics=fisher.Metrics,
        score=lambda metrics: metrics.detF,
        validate=validation_metrics if validate else None,
        progress=("detF", "detC", "detinvC", "Λ2", "r", "val_detF"),
        nonfinite_hint=NONFINITE_HINT,
    )


class IMNNBase:
    """Shared implementation of the IMNN classes; construct one of those instead.

    Attributes (after ``fit`` or ``set_F_statistics``):
        F: float(n_params, n_params) — Fisher matrix at ``w``; ``invF`` its inverse.
        C, invC: float(n_summaries, n_summaries) — covariance of the summaries and its inverse.
        μ: float(n_summaries) — mean summary; dμ_dθ: float(n_summaries, n_params).
        w: weights used for statistics and estimates (``best_w`` after ``fit(best=True)``).
        best_w, final_w, initial_w: weights at the highest monitored |F|, at the end of
            the last fit, and at construction.
        state: :class:`imnn.OptimiserState` — pass it as ``key_or_state`` to resume.
        history: dict of 1-D arrays ``detF, detC, detinvC, Λ2, r`` (and ``val_…`` with a
            validation set), one entry per iteration over all fits, plus ``max_detF``.
        model: ``model(w, d)`` — the network at weights ``w`` (e.g. ``model.w``) for one simulation
            float(*input_shape) → float(n_summaries), or a batch float(n, *input_shape) → float(n, n_summaries).
        simulate: whether simulations are drawn from a ``simulator`` during fitting.
        validate: whether there is a validation set.
        fiducial, derivative, validation_fiducial, validation_derivative: the stored-simulation
            classes keep their data arguments as given (the dataset gradient class: ``main``,
            ``remaining``, ``validation_main``, ``validation_remaining``); the aggregated and dataset
            classes keep ``host``, ``devices`` and ``n_per_device``, with ``n_devices = len(devices)``.
    """

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
        *,
        source: Source,
        data: Any,
        validation_data: Any = None,
        needs_key: bool = False,
        executor: Callable[[Source, Callable], executors.Executor] = executors.in_memory,
        verbose: bool = True,
    ):
        self.n_s = _checks.positive_int("n_s", n_s)
        self.n_d = _checks.positive_int("n_d", n_d)
        self.n_params = _checks.positive_int("n_params", n_params)
        self.n_summaries = _checks.positive_int("n_summaries", n_summaries)
        if self.n_d > self.n_s:
            raise ValueError(f"`n_d` (={n_d}) must not exceed `n_s` (={n_s})")
        if self.n_s <= self.n_summaries:
            raise ValueError(
                f"`n_s` (={n_s}) must exceed `n_summaries` (={n_summaries}) for the covariance to be invertible"
            )
        self.input_shape = _checks.input_shape(input_shape)
        self.θ_fid = _checks.vector("θ_fid", θ_fid, self.n_params)
        self.verbose = _checks.boolean("verbose", verbose)
        self._needs_key = needs_key

        self._network = as_network(model, self.input_shape)
        self.n_fixed = hybrid.n_fixed(model, self.input_shape)  # summaries from a Hybrid's fixed statistic
        if self.n_fixed >= self.n_summaries:
            raise ValueError(
                f"`n_summaries` (={n_summaries}) should exceed the {self.n_fixed} entries of the Hybrid's fixed "
                "statistic: the network gives the rest"
            )
        self._optimiser = as_optimiser(optimiser)
        self.state = initial_state(self._network, optimiser, self._optimiser, key_or_state)
        _checks.output_shape(
            "model", self._network.apply, (self.state.params, jnp.zeros(self.input_shape)),
            (self.n_summaries,), f"one simulation of shape {self.input_shape}",
            fix=f"change the model's output size or `n_summaries` (={self.n_summaries})",
        )  # fmt: skip
        self.initial_w = self.final_w = self.best_w = self.w = self.state.params
        self.history = _empty_history(validation_data is not None)
        self.information_history: list[tuple[int, fisher.Information]] = []
        self.F = self.invF = self.C = self.invC = self.μ = self.dμ_dθ = None

        apply, θ_fid = self._network.apply, self.θ_fid
        run = executor(source, apply)
        self._place = run.place
        self._data = run.prepare(data)
        self._validation_data = None if validation_data is None else run.prepare(validation_data)
        # Closures over static configuration, compiled once per model (never bound methods).
        self._monitor = fisher_monitor(run.summaries, validation_data is not None)
        self._chunk = engine.make_chunk(run.loss_and_grad, self._optimiser, self._monitor, run.traceable)
        self._max_chunk = engine.BUFFER_SIZE if run.traceable else 1
        # Called from Python on data that may span devices: one program at a time (see executors.exclusive).
        summaries = executors.exclusive(run.summaries) if run.traceable else run.summaries
        statistics = executors.exclusive(lambda x, dx_dθ: _with_inverse_F(fisher.statistics(x, dx_dθ)))
        self._summaries = summaries
        self._statistics = lambda w, data, key: statistics(*summaries(w, data, key))
        self._estimate = jax.jit(lambda w, d, stats: fisher.estimate(jax.vmap(apply, (None, 0))(w, d), stats, θ_fid))
        self.model = _compat.network_function(apply, self.input_shape)

    # ---------------------------------------------------------------- fitting
    @accepts_ascii_aliases
    def fit(
        self,
        λ: float,
        ϵ: float,
        rng: jax.Array | None = None,
        patience: int = 100,
        min_iterations: int = _checks.Default(100),
        max_iterations: int = 100000,
        print_rate: int | None = None,
        best: bool = True,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int = 1000,
        dispatch: str = "auto",
    ) -> IMNNBase:
        """Maximise ``ln|F|`` with the covariance regularised towards the identity.

        Args:
            λ: regularisation coupling (> 0), e.g. 10.
            ϵ: closeness to the identity at which regularisation switches off (> 0), e.g. 0.1.
            rng: PRNG key; required by simulator-based IMNNs (fresh simulations each iteration).
            patience: iterations after ``min_iterations`` without a new maximum of the
                monitored |F| (validation |F| when a validation set exists) before stopping (≥ 1).
            min_iterations: iterations always run in this call (the default 100 is capped at
                ``max_iterations``; a larger value given explicitly is an error).
            max_iterations: most iterations in this call (at most 2**31 - 1).
            print_rate: show a progress bar updated every ``print_rate`` iterations.
            best: afterwards use the weights of the highest monitored |F| (else the last).
            checkpoint: save the model there (see :meth:`save`) every ``checkpoint_every``
                iterations, between jitted chunks, and when the fit ends or is interrupted.
                Mid-fit checkpoints carry no Fisher statistics (they are computed at the end).
            checkpoint_every: iterations between checkpoints.
            dispatch: ``"loop"`` runs chunks of iterations as one ``lax.while_loop`` program (the
                fastest for small networks), ``"step"`` one program per iteration (much faster for
                convolutions on a CPU, which XLA compiles poorly inside loops), ``"auto"`` measures
                both on the model's first iterations and keeps the faster. Dataset IMNNs always run
                one iteration at a time.

        Returns:
            The model, with ``history`` extended and the Fisher statistics set.
            Calling ``fit`` again continues from the current optimiser state.
        """
        λ, ϵ = _checks.regularisation(λ, ϵ)
        if rng is None and self._needs_key:
            raise ValueError(
                f"`rng` must be a PRNG key, e.g. rng=jax.random.key(0): {type(self).__name__} draws fresh "
                "simulations every iteration"
            )
        key = jax.random.key(0) if rng is None else _checks.key("rng", rng)
        if print_rate is not None:
            print_rate = _checks.positive_int("print_rate", print_rate)
        checkpoint_every = _checks.positive_int("checkpoint_every", checkpoint_every)
        best = _checks.boolean("best", best)
        dispatch = _checks.dispatch(dispatch, self._chunk.modes)
        patience, min_iterations, max_iterations = _checks.iteration_limits(patience, min_iterations, max_iterations)
        dtype = jnp.result_type(float)
        settings = engine.Settings(
            hyper=(jnp.asarray(λ, dtype), jnp.asarray(fisher.alpha(λ, ϵ), dtype)),
            patience=jnp.int32(patience),
            min_iterations=jnp.int32(min_iterations),
            max_iterations=jnp.int32(max_iterations),
        )
        if checkpoint is not None:  # a bad path fails now, not after the first `checkpoint_every` iterations
            persistence.check_path(checkpoint)
        start = self._place(
            engine.FitState(
                w=self.state.params,
                opt_state=self.state.opt_state,
                count=self.state.count,
                best_w=self.best_w,
                best_score=jnp.asarray(self.history["max_detF"], jnp.float32),
                key=key,
            )
        )
        saver = None if checkpoint is None else self._checkpointer(checkpoint, checkpoint_every, best)
        outcome = engine.run(
            self._chunk, start, settings, self._data, self._validation_data, monitor=self._monitor,
            max_iterations=int(settings.max_iterations), print_rate=print_rate, max_chunk=self._max_chunk,
            on_chunk=saver, dispatch=dispatch,
        )  # fmt: skip
        with interrupts.deferred():  # the new weights and their (cleared) statistics go together
            self._absorb(outcome, best)
            self._clear_statistics()  # they belonged to the previous weights
        if saver is not None:  # the progress, before anything else that can fail or be interrupted
            saver(outcome, final=True)
        if outcome.error is not None:  # the progress is kept and saved; then the error is the user's
            raise outcome.error
        if self.verbose and outcome.reason in ("converged", "max_iterations"):
            why = "early stopping" if outcome.reason == "converged" else "max_iterations reached"
            max_detF = self.history["max_detF"]
            print(f"{type(self).__name__}: {outcome.iterations} iterations ({why}), max |F| = {max_detF:.4g}")
        self.set_F_statistics(self.w, key=jax.random.split(outcome.state.key)[1])
        if checkpoint is not None:  # again, now with the statistics
            self._save_checkpoint(checkpoint)
        return self

    def _clear_statistics(self) -> None:
        self.F = self.invF = self.C = self.invC = self.μ = self.dμ_dθ = None

    def _save_checkpoint(self, path: str | os.PathLike) -> None:
        with interrupts.deferred():  # a Ctrl-C during the write would otherwise lose this save
            self.save(path)

    def _checkpointer(self, path: str | os.PathLike, every: int, best: bool) -> Callable[..., None]:
        """``save_progress(outcome, final=False)``: during the fit every ``every`` iterations of
        ``outcome`` (absorbed into a snapshot, the model is untouched); ``final`` once the model has
        absorbed the outcome, unless the last periodic save already holds it."""
        saved_at = [0, False]  # iterations at the last save, and whether there was one

        def save_progress(outcome: engine.Outcome, final: bool = False) -> None:
            if final:
                if not (saved_at[1] and saved_at[0] == outcome.iterations):
                    self._save_checkpoint(path)
                return
            if outcome.iterations - saved_at[0] >= every:
                snapshot = copy.copy(self)
                snapshot.history = History(self.history)
                snapshot._absorb(outcome, best)
                snapshot._clear_statistics()
                snapshot._save_checkpoint(path)
                saved_at[:] = [outcome.iterations, True]

        return save_progress

    def _absorb(self, outcome: engine.Outcome, best: bool) -> None:
        s = outcome.state
        self.state = OptimiserState(params=s.w, opt_state=s.opt_state, count=s.count)
        self.final_w, self.best_w = s.w, s.best_w
        for name, values in outcome.history.items():
            self.history[name] = np.concatenate([self.history[name], values])
        self.history["max_detF"] = float(s.best_score)
        self.w = self.best_w if best and np.isfinite(self.history["max_detF"]) else self.final_w

    # ------------------------------------------------------------- statistics
    def _data_for(self, validate: bool) -> Any:
        return self._validation_data if validate and self._validation_data is not None else self._data

    def _key_for(self, key: Any) -> jax.Array:
        if key is None:
            if self._needs_key:
                raise ValueError(
                    f"`key` must be a PRNG key: {type(self).__name__} computes statistics on fresh simulations"
                )
            return self._place(jax.random.key(0))
        return self._place(_checks.key("key", key))

    def set_F_statistics(self, w: Any = None, key: jax.Array | None = None, validate: bool = True) -> IMNNBase:
        """Set ``F, invF, C, invC, μ, dμ_dθ`` (and ``w``) from the summaries at weights ``w``.

        Args:
            w: weights (default: ``self.w``).
            key: PRNG key for simulator-based IMNNs (fresh simulations).
            validate: use the validation set when there is one.
        """
        w = self.w if w is None else w
        stats, invF = self._statistics(w, self._data_for(validate), self._key_for(key))
        F = np.asarray(stats.F)
        if not np.all(np.isfinite(F)) or np.linalg.det(F) <= 0:
            _checks.warn(
                "the Fisher matrix is singular or not finite at these weights: estimates will not be meaningful"
            )
        with interrupts.deferred():  # the weights and their statistics change together
            self.w = w
            self.F, self.C, self.invC, self.dμ_dθ, self.μ = stats
            self.invF = invF
        return self

    def information(
        self,
        w: Any = None,
        key: jax.Array | None = None,
        validate: bool = True,
        *,
        confidence: float = 0.9,
        n_bootstrap: int = 1000,
        hartlap: bool = False,
    ) -> fisher.Information:
        """:func:`imnn.fisher.information` of this model's summaries: ``F``, ``|F|`` and its bootstrap interval.

        The summaries are those of the validation set when there is one and ``validate`` is true,
        else of the training set (fresh simulations for simulator-based IMNNs: give ``key``). The
        result is also kept in ``information_history`` with the iteration it belongs to, and
        :meth:`plot` draws it on the ``|F|`` history.
        """
        x, dx_dθ, resampling = self._summaries_to_resample(w, key, validate)
        result = fisher.information(
            x, dx_dθ, confidence=confidence, n_bootstrap=n_bootstrap, hartlap=hartlap, key=resampling
        )
        self.information_history.append((max(len(self.history["detF"]) - 1, 0), result))
        return result

    information_map = information_maps.for_model
    hybrid_information = hybrid.for_model

    def _summaries_to_resample(self, w: Any, key: jax.Array | None, validate: bool):
        """The summaries :meth:`information` reports on, and a key for its bootstrap."""
        summaries, resampling = jax.random.split(self._key_for(key))
        return (*self.get_summaries(w, summaries, validate), resampling)

    def get_summaries(self, w: Any = None, key: jax.Array | None = None, validate: bool = False):
        """Summaries and their derivatives at weights ``w`` (default ``self.w``).

        Returns:
            ``(x: float(n_s, n_summaries), dx_dθ: float(n_d, n_summaries, n_params))``.
        """
        w = self.w if w is None else w
        return self._summaries(w, self._data_for(validate), self._key_for(key))

    def get_estimate(self, d: Any) -> jax.Array:
        """Quasi-maximum-likelihood estimate of the parameters for data ``d``.

        Args:
            d: float(*input_shape) for one simulation or float(n, *input_shape) for a batch.

        Returns:
            float(n_params) or float(n, n_params).
        """
        if self.F is None:
            raise RuntimeError("`get_estimate` needs Fisher statistics: call `fit` or `set_F_statistics` first")
        single = _checks.one_or_batch("d", d, self.input_shape)
        batch = jnp.asarray(d)[None] if single else jnp.asarray(d)
        stats = fisher.FisherStatistics(self.F, self.C, self.invC, self.dμ_dθ, self.μ)
        estimates = self._estimate(self.w, batch, stats)
        return estimates[0] if single else estimates

    # ------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write weights, optimiser state, history and Fisher statistics to ``path`` (atomically)."""
        persistence.save(self, path)

    def load(self, path: str | os.PathLike) -> IMNNBase:
        """Restore a checkpoint from :meth:`save` into this model, built with the same settings.

        Estimates are then identical to the saved model's and ``fit`` resumes from the saved
        optimiser state, appending to the saved history. Raises ``ValueError`` saying what
        differs when the checkpoint does not fit this model.
        """
        return persistence.load(self, path)

    # ---------------------------------------------------------------- display
    def plot(
        self,
        ax: Any = None,
        expected_detF: float | None = None,
        colour: str = "C0",
        figsize: tuple[float, float] = (5, 15),
        label: str = "",
        filename: str | None = None,
        ncol: int = 1,
    ):
        """Plot the fit history (|F|; |C| and |C⁻¹|; Λ2 and r) and return the axes.

        Every :meth:`information` computed so far is drawn on the |F| panel as its interval.

        See :func:`imnn.plotting.plot_history` for the arguments.
        """
        return plotting.plot_history(
            self.history, ax=ax, expected_detF=expected_detF, colour=colour,
            figsize=figsize, label=label, filename=filename, ncol=ncol, intervals=self.information_history,
        )  # fmt: skip

    # ------------------------------------------------------------ ASCII names
    theta_fid = property(lambda self: self.θ_fid, doc="ASCII alias of ``θ_fid``.")
    mu = property(lambda self: self.μ, doc="ASCII alias of ``μ``.")
    dmu_dtheta = property(lambda self: self.dμ_dθ, doc="ASCII alias of ``dμ_dθ``.")
    delta_theta = property(lambda self: self.δθ, doc="ASCII alias of ``δθ`` (numerical-gradient IMNNs).")

    # ------------------------------------------------- IMNN 0.3.2 names (docs/migration.md)
    get_α = get_alpha = staticmethod(accepts_ascii_aliases(_compat.get_α))
    simulate, validate = _compat.simulate, _compat.validate
