"""The user-facing :class:`RIM`: torch_rim's API over :mod:`imnn.rim.core` and the fit engine."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import _checks, engine, interrupts
from ..adapters import as_optimiser, describe
from . import core
from .models import as_network
from .training import RIMMetrics, batch_loss, batched, instance_forward, optimiser, training_loss_and_grad

PROGRESS = ("loss", "val_loss")
NONFINITE_HINT = " (e.g. a score that is not finite at the iterates, or a learning rate too large)"
SIMULATOR_ITERATIONS = 100  # iterations per epoch when training on a simulator


def _identity(z: jax.Array) -> jax.Array:
    return z


class RIM:
    """A Recurrent Inference Machine for ``y = F(x) + η`` (Putzky & Welling 2017).

    Args:
        dimensions: spatial shape of one instance, ``()`` for a vector problem. One ``x`` has
            shape ``(*dimensions, channels)`` with ``channels`` from the model.
        model: a RIM network, ``model(x, y, score, h) -> (dx, h_new)`` for one instance
            (e.g. :class:`imnn.rim.MLP`).
        score_fn: ``score_fn(x, y, *args)`` → ∇ₓ log p(y | x) for ONE instance (shape of ``x``).
            For ``y = A x + σ ε``: ``lambda x, y, A, σ: A.T @ (y - A @ x) / σ**2``.
        energy_fn: ``energy_fn(x, y, *args)`` → log p(y | x) up to a constant (a scalar, NOT a χ²:
            ``-0.5 * jnp.sum((y - A @ x)**2) / σ**2``); its score is ``jax.grad``. Give exactly one
            of ``score_fn`` and ``energy_fn``.
        T: number of steps.
        link_function: ``ψ``, model space → physical space (e.g. ``jnp.exp`` for positive fields),
            with ``inverse_link_function`` its inverse; default the identity.
        initialization_method: ``"zeros"``, ``"approximate_inverse"`` (``z₀ = ψ⁻¹(approximate_inverse_fn(y,
            *args))``) or ``"model"`` (a first network pass, which adds ``z₀`` to the iterates).
        score_preprocessing_method: ``"identity"``, ``"arcsinh"``, ``"adam"`` or ``"rmsprop"``.
        epsilon, beta_1, beta_2: the Adam/RMSProp preprocessing constants.
        key: PRNG key for the network's initial weights (default ``jax.random.key(0)``).

    Attributes:
        params: the network weights ``predict`` uses (after ``fit``: the best on the
            validation set, or the last without one); ``None`` until first needed.
        history: ``{"loss", "val_loss"}`` per epoch over all fits (means over the epoch's iterations).
    """

    def __init__(
        self,
        dimensions: tuple[int, ...],
        model: Any,
        score_fn: Callable | None = None,
        energy_fn: Callable | None = None,
        T: int = 10,
        link_function: Callable | None = None,
        inverse_link_function: Callable | None = None,
        initialization_method: str = "zeros",
        approximate_inverse_fn: Callable | None = None,
        score_preprocessing_method: str = "identity",
        epsilon: float = 1e-7,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        key: jax.Array | None = None,
    ):
        if (score_fn is None) == (energy_fn is None):
            raise ValueError("give exactly one of `score_fn` (∇ₓ log p(y|x)) and `energy_fn` (log p(y|x))")
        if link_function is None and inverse_link_function is not None:
            raise ValueError("`inverse_link_function` was given without `link_function`")
        if link_function is not None and inverse_link_function is None:
            raise ValueError("`link_function` needs `inverse_link_function` (the loss compares in model space)")
        initialization = _checks.one_of("initialization_method", initialization_method, core.INITIALISATION)
        if initialization == "approximate_inverse" and approximate_inverse_fn is None:
            raise ValueError('`initialization_method="approximate_inverse"` needs `approximate_inverse_fn`')
        if not isinstance(dimensions, (tuple, list)) or not all(isinstance(d, int) and d > 0 for d in dimensions):
            raise TypeError(f"`dimensions` should be a tuple of positive ints, () for vectors, but is {dimensions!r}")
        self.config = core.Config(
            T=_checks.positive_int("T", T),
            preprocessing=_checks.one_of("score_preprocessing_method", score_preprocessing_method, core.PREPROCESSING),
            initialization=initialization,
            epsilon=_checks.positive_float("epsilon", epsilon),
            beta_1=float(beta_1),
            beta_2=float(beta_2),
        )
        self._network = as_network(model)
        self.model, self.dimensions = model, tuple(dimensions)
        self.channels = self._network.channels
        self.x_shape = (*self.dimensions, self.channels)
        self.link_function = link_function or _identity
        self.inverse_link_function = inverse_link_function or _identity
        self.score_fn = score_fn if score_fn is not None else jax.grad(energy_fn)
        self.energy_fn = energy_fn
        self._score = core.model_space_score(self.score_fn, self.link_function)
        self._forward = instance_forward(
            self._network, self.config, self._score, self.x_shape, self.dimensions,
            self.inverse_link_function, approximate_inverse_fn,
        )  # fmt: skip
        self._loss = batch_loss(self._forward, self.inverse_link_function)
        link = self.link_function
        run = batched(self._forward)
        self._predict = jax.jit(lambda params, y, args: jax.vmap(link)(run(params, y, args)[:, -1]))
        self._iterates = jax.jit(lambda params, y, args: jnp.swapaxes(run(params, y, args), 0, 1))
        self._key = jax.random.key(0) if key is None else _checks.key("key", key)
        self.params: Any = None
        self.history: dict[str, np.ndarray] = {"loss": np.zeros(0), "val_loss": np.zeros(0)}
        self._state: engine.FitState | None = None  # where the last fit ended, to continue from
        self._state_setting: tuple | None = None
        self._fits: dict[tuple, tuple[engine.Dispatcher, engine.Monitor]] = {}  # compiled chunks per fit setting

    @property
    def T(self) -> int:
        return self.config.T

    # ------------------------------------------------------------ checking
    def _checked_batch(self, name: str, y: Any, x: Any | None, args: tuple) -> tuple:
        """``(y, x, args)`` as arrays after checking the batch axis, ``x``'s shape and finiteness."""
        arrays = [("y", y)] + ([("x", x)] if x is not None else []) + [(f"args[{i}]", a) for i, a in enumerate(args)]
        converted = []
        for label, value in arrays:
            array = jnp.asarray(value)
            if array.ndim == 0:
                raise ValueError(f"`{name}` {label} should have a leading batch axis, but is a scalar")
            if jnp.issubdtype(array.dtype, jnp.inexact) and not bool(jnp.all(jnp.isfinite(array))):
                raise ValueError(f"`{name}` {label} holds non-finite values (NaN or inf)")
            converted.append(array)
        sizes = {label: a.shape[0] for (label, _), a in zip(arrays, converted)}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"`{name}`'s arrays should share their leading batch axis, but have sizes {sizes}")
        if x is not None and tuple(converted[1].shape[1:]) != self.x_shape:
            raise ValueError(
                f"`{name}` x has instances of shape {tuple(converted[1].shape[1:])}, but `dimensions` "
                f"{self.dimensions} and the model's {self.channels} channels give {self.x_shape}"
            )
        if x is None:
            return converted[0], None, tuple(converted[1:])
        return converted[0], converted[1], tuple(converted[2:])

    def _ensure_params(self, y: jax.Array, args: tuple) -> None:
        """Check the score and the model on one instance, and initialise the weights if needed."""
        z, y0, args0 = jnp.zeros(self.x_shape), y[0], tuple(a[0] for a in args)
        what = f"x of shape {self.x_shape} and one instance of y and of the args"
        _checks.output_shape("score_fn", self.score_fn, (z, y0, *args0), self.x_shape, what,
                             fix="it returns ∇ₓ log p(y|x) for ONE instance, shaped like x")  # fmt: skip
        h0 = self._network.hidden(self.dimensions)
        if self.params is None:
            self.params = self._network.init(self._key, z, y0, z, h0)
        _checks.output_shape(
            "model", lambda *a: self._network.apply(*a)[0], (self.params, z, y0, z, h0), self.x_shape,
            "(x, y, score, h) of one instance", fix="its update dx should be shaped like x",
        )  # fmt: skip

    # ----------------------------------------------------------- inference
    def forward(self, y: Any, *args: Any) -> jax.Array:
        """Model-space iterates: float(T, batch, *dimensions, channels) (T + 1 with ``"model"`` initialisation)."""
        y, _, args = self._checked_batch("y", y, None, args)
        self._ensure_params(y, args)
        return self._iterates(self.params, y, args)

    def predict(self, y: Any, *args: Any) -> jax.Array:
        """The reconstruction ``ψ(z_T)``: float(batch, *dimensions, channels); ``y`` and ``args`` batched."""
        y, _, args = self._checked_batch("y", y, None, args)
        self._ensure_params(y, args)
        return self._predict(self.params, y, args)

    def loss_fn(self, y: Any, x: Any, *args: Any, time_weights: Any = None) -> jax.Array:
        """The training loss on a batch: mean over it of ``Σₜ wₜ ‖zₜ − ψ⁻¹(x)‖²`` (see :func:`core.time_weights`)."""
        y, x, args = self._checked_batch("y", y, x, args)
        self._ensure_params(y, args)
        weights = core.time_weights(time_weights, self._n_iterates)
        return self._loss(self.params, (y, x, args), weights)

    @property
    def _n_iterates(self) -> int:
        return self.T + (self.config.initialization == "model")

    # ------------------------------------------------------------- fitting
    def fit(
        self,
        dataset: tuple | None = None,
        epochs: int = 100,
        learning_rate: float = 1e-4,
        batch_size: int = 1,
        *,
        simulator: Callable | None = None,
        n_iterations_in_epoch: int | None = None,
        validation: tuple | None = None,
        patience: int | None = None,
        warmup: int = 0,
        clip: float = 0.0,
        scheduler: Callable | None = None,
        optimizer: optax.GradientTransformation | None = None,
        time_weights: Any = None,
        key: jax.Array | None = None,
        progress: bool = True,
    ) -> list[float]:
        """Train on ``dataset = (y, x, *args)`` (arrays with a leading instance axis) or on fresh draws
        of ``simulator(key) -> (y, x, *args)`` (one instance; the better choice: a RIM overfits a
        finite training set).

        Args:
            epochs: most epochs of ``n_iterations_in_epoch`` steps (default: one pass over
                ``dataset``, or ``SIMULATOR_ITERATIONS`` with a simulator).
            learning_rate: Adam's, unless ``scheduler`` (an optax schedule of the step) or
                ``optimizer`` (an optax transformation) is given.
            batch_size: instances per step (distinct ones of ``dataset``, drawn at random).
            validation: ``(y, x, *args)`` evaluated at every step; its loss is early stopping's
                and picks the weights kept (otherwise the last ones are).
            patience: epochs without a new best validation loss before stopping (needs ``validation``).
            warmup: steps over which the learning rate ramps up linearly from 0.
            clip: clip the gradients' global norm to it (when positive).
            time_weights: the loss's per-step weights (see :func:`imnn.rim.core.time_weights`).
            key: PRNG key for the batches (default: continues the previous fit's stream).
            progress: show a progress bar.

        Returns:
            The mean training loss of each epoch of this fit (``history`` keeps all of them).
            Calling ``fit`` again with the same settings continues the optimiser and compiles nothing.
        """
        if (dataset is None) == (simulator is None):
            raise ValueError("give exactly one of `dataset` ((y, x, *args) arrays) and `simulator` (key -> instance)")
        epochs = _checks.positive_int("epochs", epochs)
        batch_size = _checks.positive_int("batch_size", batch_size)
        warmup = _checks.non_negative_int("warmup", warmup)
        if patience is not None:
            patience = _checks.positive_int("patience", patience)
            if validation is None:
                raise ValueError("`patience` needs `validation` data: early stopping watches the validation loss")
        data = None if dataset is None else self._checked_batch("dataset", *self._unpack("dataset", dataset))
        if simulator is not None:
            if not callable(simulator):
                raise TypeError(f"`simulator` should be a function key -> (y, x, *args), but is {describe(simulator)}")
            data = self._simulated_example(simulator)
        elif batch_size > data[0].shape[0]:
            raise ValueError(f"`batch_size` (={batch_size}) exceeds the {data[0].shape[0]} instances of `dataset`")
        val_data = None
        if validation is not None:
            val_data = self._checked_batch("validation", *self._unpack("validation", validation))
        n_per_epoch = n_iterations_in_epoch
        if n_per_epoch is None:
            n_per_epoch = SIMULATOR_ITERATIONS if simulator is not None else math.ceil(data[0].shape[0] / batch_size)
        n_per_epoch = _checks.positive_int("n_iterations_in_epoch", n_per_epoch)
        self._ensure_params(data[0], data[2])
        weights = core.time_weights(time_weights, self._n_iterates)
        if optimizer is None:
            learning_rate = _checks.positive_float("learning_rate", learning_rate)
            if isinstance(clip, bool) or not (isinstance(clip, (int, float)) and clip >= 0):
                raise ValueError(f"`clip` should be a number ≥ 0 (0: no clipping), but is {clip!r}")
            how = ("adam", learning_rate, warmup, float(clip), id(scheduler))
            make_optimizer = lambda: optimiser(learning_rate, warmup, float(clip), scheduler)
        elif isinstance(optimizer, optax.GradientTransformation):
            how, make_optimizer = ("user", id(optimizer)), lambda: optimizer
        else:
            raise TypeError(f"`optimizer` should be an optax.GradientTransformation, but is {describe(optimizer)}")
        setting = (*how, batch_size, id(simulator), val_data is not None)
        chunk, monitor, wrapped = self._compiled(setting, make_optimizer, batch_size, simulator, val_data is not None)
        state = self._start_state(setting, wrapped, key)
        max_iterations = epochs * n_per_epoch
        settings = engine.Settings(
            hyper=(weights,),
            patience=jnp.int32(max_iterations + 1 if patience is None else patience * n_per_epoch),
            min_iterations=jnp.int32(0),
            max_iterations=jnp.int32(max_iterations),
        )
        outcome = engine.run(
            chunk, state, settings, None if simulator is not None else data, val_data, monitor=monitor,
            max_iterations=max_iterations, print_rate=min(n_per_epoch, engine.BUFFER_SIZE) if progress else None,
        )  # fmt: skip
        with interrupts.deferred():
            losses = self._absorb(outcome, n_per_epoch, val_data is not None, setting)
        if outcome.error is not None:
            raise outcome.error
        return losses

    def _unpack(self, name: str, batch: Any) -> tuple:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise TypeError(f"`{name}` should be a tuple (y, x, *args) of arrays, but is {describe(batch)}")
        y, x, *args = batch
        return y, x, tuple(args)

    def _simulated_example(self, simulator: Callable) -> tuple:
        """One batch of two simulations, checked like a dataset (the shapes the fit compiles for)."""
        try:
            example = jax.vmap(simulator)(jax.random.split(jax.random.key(0), 2))
        except Exception as error:
            raise ValueError(f"`simulator` failed on a PRNG key: {error}") from error
        return self._checked_batch("simulator", *self._unpack("simulator's output", tuple(example)))

    def _compiled(self, setting: tuple, make_optimizer: Callable, batch_size: int, simulator, validate: bool):
        """The fit engine's chunk for this setting, built once (a second fit compiles nothing)."""
        if setting not in self._fits:
            loss_and_grad = training_loss_and_grad(self._loss, batch_size, simulator)

            def validation_metrics(params, val_data, key, weights):
                return RIMMetrics(self._loss(params, val_data, weights))

            monitor = engine.Monitor(
                metrics=RIMMetrics, score=lambda metrics: -metrics.loss,
                validate=validation_metrics if validate else None, progress=PROGRESS, nonfinite_hint=NONFINITE_HINT,
            )  # fmt: skip
            wrapped = as_optimiser(make_optimizer())
            self._fits[setting] = (engine.make_chunk(loss_and_grad, wrapped, monitor), monitor, wrapped)
        return self._fits[setting]

    def _start_state(self, setting: tuple, wrapped, key: Any) -> engine.FitState:
        """Continue the previous fit's optimiser when the setting is the same, else start one on ``params``."""
        previous = self._state
        if key is not None:
            stream = _checks.key("key", key)
        elif previous is not None:
            stream = previous.key
        else:
            stream = jax.random.fold_in(self._key, 1)
        if previous is not None and self._state_setting == setting:
            return previous._replace(key=stream, best_score=jnp.float32(-jnp.inf))
        params = self.params
        return engine.FitState(w=params, opt_state=wrapped.init(params), count=jnp.zeros((), jnp.int32), best_w=params,
                               best_score=jnp.float32(-jnp.inf), key=stream)  # fmt: skip

    def _absorb(self, outcome: engine.Outcome, n_per_epoch: int, validated: bool, setting: tuple) -> list[float]:
        s = outcome.state
        self._state, self._state_setting = s, setting
        self.params = s.best_w if validated and bool(jnp.isfinite(s.best_score)) else s.w
        epochs = {}
        for name in ("loss", "val_loss"):
            values = outcome.history.get(name, np.zeros(0))
            starts = range(0, len(values), n_per_epoch)
            epochs[name] = np.array([values[i : i + n_per_epoch].mean() for i in starts])
        if not validated:
            epochs["val_loss"] = np.full(len(epochs["loss"]), np.nan)
        for name, values in epochs.items():
            self.history[name] = np.concatenate([self.history[name], values])
        return [float(v) for v in epochs["loss"]]
