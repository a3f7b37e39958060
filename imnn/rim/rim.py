"""The user-facing :class:`RIM`: torch_rim's API over :mod:`imnn.rim.core` and the fit engine."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import _checks, aggregation, engine, interrupts
from ..adapters import describe
from . import checkpoints as store
from . import core, data, fitting, training
from .models import as_network
from .training import batch_loss, batched, instance_forward


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
        link_function: ``ψ``, model space → physical space: a name (``"exp"`` for positive fields,
            ``"softplus"``, ``"sigmoid"`` for (0, 1), ``"identity"``, the default), which a checkpoint
            records, or a function with ``inverse_link_function`` its inverse.
        initialization_method: ``"zeros"``, ``"approximate_inverse"`` (``z₀ = ψ⁻¹(approximate_inverse_fn(y,
            *args))``) or ``"model"`` (a first network pass, which adds ``z₀`` to the iterates).
        score_preprocessing_method: ``"identity"``, ``"arcsinh"``, ``"adam"`` or ``"rmsprop"``.
        epsilon, beta_1, beta_2: the Adam/RMSProp preprocessing constants.
        checkpoints_directory: a folder of :meth:`fit` checkpoints: the newest is loaded (its
            configuration is adopted where an argument is left at its default, and must agree where
            one is given; ``dimensions`` and a built-in ``model`` may be left out), and ``fit``
            keeps writing there.
        key: PRNG key for the network's initial weights (default ``jax.random.key(0)``).

    Attributes:
        params: the network weights ``predict`` uses (after ``fit``: the best on the
            validation set, or the last without one); ``None`` until first needed.
        history: ``{"loss", "val_loss"}`` per epoch over all fits (means over the epoch's iterations).
    """

    def __init__(
        self,
        dimensions: tuple[int, ...] | None = None,
        model: Any = None,
        score_fn: Callable | None = None,
        energy_fn: Callable | None = None,
        T: int = 10,
        link_function: str | Callable | None = None,
        inverse_link_function: Callable | None = None,
        initialization_method: str = "zeros",
        approximate_inverse_fn: Callable | None = None,
        score_preprocessing_method: str = "identity",
        epsilon: float = 1e-7,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        checkpoints_directory: str | os.PathLike | None = None,
        key: jax.Array | None = None,
    ):
        given = {name: value for name, value in locals().items() if name in _DEFAULTS}
        saved = None
        if checkpoints_directory is not None and store.files(checkpoints_directory):
            saved = store.read(checkpoints_directory)
        self._build(given, saved)
        self.checkpoints_directory = checkpoints_directory

    @classmethod
    def load(
        cls, path: str | os.PathLike, score_fn: Callable | None = None, energy_fn: Callable | None = None, *,
        model: Any = None, link_function: str | Callable | None = None, inverse_link_function: Callable | None = None,
        approximate_inverse_fn: Callable | None = None,
    ) -> RIM:  # fmt: skip
        """The RIM saved at ``path`` (a file from :meth:`save`, or a checkpoint folder: its newest),
        with its weights, configuration, fit state and history. Code is not saved, so give the
        ``score_fn`` or ``energy_fn``, and ``model`` or a custom link function when it used one."""
        given = dict(
            _DEFAULTS, score_fn=score_fn, energy_fn=energy_fn, model=model, link_function=link_function,
            inverse_link_function=inverse_link_function, approximate_inverse_fn=approximate_inverse_fn,
        )  # fmt: skip
        rim = cls.__new__(cls)
        rim._build(given, store.read(path))
        rim.checkpoints_directory = None
        return rim

    def save(self, path: str | os.PathLike) -> None:
        """Write the weights, configuration, fit state and history to the file ``path`` (atomically)."""
        if self.params is None:
            raise ValueError("this RIM has no weights yet: call `fit` (or `predict`) before `save`")
        store.save(self, path)

    def _build(self, given: dict[str, Any], saved: dict[str, Any] | None) -> None:
        if saved is not None:
            given = store.adopt(saved, given, _DEFAULTS)
        if given["model"] is None:
            raise ValueError("give `model` (a RIM network such as imnn.rim.MLP), or a `checkpoints_directory` to load")
        if given["dimensions"] is None:
            raise ValueError("give `dimensions`: the spatial shape of one x, () for a vector problem")
        if (given["score_fn"] is None) == (given["energy_fn"] is None):
            raise ValueError("give exactly one of `score_fn` (∇ₓ log p(y|x)) and `energy_fn` (log p(y|x))")
        self.link_function, self.inverse_link_function, self.link_name = _links(
            given["link_function"], given["inverse_link_function"]
        )
        initialization = _checks.one_of("initialization_method", given["initialization_method"], core.INITIALISATION)
        if initialization == "approximate_inverse" and given["approximate_inverse_fn"] is None:
            raise ValueError('`initialization_method="approximate_inverse"` needs `approximate_inverse_fn`')
        dimensions = given["dimensions"]
        if not isinstance(dimensions, (tuple, list)) or not all(isinstance(d, int) and d > 0 for d in dimensions):
            raise TypeError(f"`dimensions` should be a tuple of positive ints, () for vectors, but is {dimensions!r}")
        self.config = core.Config(
            T=_checks.positive_int("T", given["T"]),
            preprocessing=_checks.one_of(
                "score_preprocessing_method", given["score_preprocessing_method"], core.PREPROCESSING
            ),
            initialization=initialization,
            epsilon=_checks.positive_float("epsilon", given["epsilon"]),
            beta_1=float(given["beta_1"]),
            beta_2=float(given["beta_2"]),
        )
        self._network = as_network(given["model"])
        self.model, self.dimensions = given["model"], tuple(dimensions)
        self.channels = self._network.channels
        self.x_shape = (*self.dimensions, self.channels)
        self.energy_fn = given["energy_fn"]
        self.score_fn = given["score_fn"] if given["score_fn"] is not None else jax.grad(self.energy_fn)
        self._score = core.model_space_score(self.score_fn, self.link_function)
        self._forward = instance_forward(
            self._network, self.config, self._score, self.x_shape, self.dimensions,
            self.inverse_link_function, given["approximate_inverse_fn"],
        )  # fmt: skip
        self._loss = batch_loss(self._forward, self.inverse_link_function)
        link = self.link_function
        run = batched(self._forward)
        self._predict = jax.jit(lambda params, y, args: jax.vmap(link)(run(params, y, args)[:, -1]))
        self._iterates = jax.jit(lambda params, y, args: jnp.swapaxes(run(params, y, args), 0, 1))
        self._key = jax.random.key(0) if given["key"] is None else _checks.key("key", given["key"])
        self.params: Any = None
        self.history: dict[str, np.ndarray] = {"loss": np.zeros(0), "val_loss": np.zeros(0)}
        self._instance: tuple | None = None  # one (y, args): the shapes the weights were initialised for
        self._state: engine.FitState | None = None  # where the last fit ended, to continue from
        self._state_setting: tuple | None = None
        self._state_description: dict | None = None  # the last fit's optimiser, saved with its state
        self._pending: tuple | None = None  # a loaded fit state, adopted by the next fit
        self._fits: dict[tuple, tuple] = {}  # compiled chunks per fit setting
        self._checked: set[tuple] = set()  # input shapes the score and model were checked on
        if saved is not None:
            store.restore(self, saved)

    @property
    def T(self) -> int:
        return self.config.T

    # ------------------------------------------------------------ checking
    def _initial_params(self, y0: jax.Array, args0: tuple) -> Any:
        z = jnp.zeros(self.x_shape)
        return self._network.init(self._key, z, y0, z, self._network.hidden(self.dimensions))

    def _ensure_params(self, y: jax.Array, args: tuple) -> None:
        """Check the score and the model on one instance, and initialise the weights if needed
        (once per shape of the inputs: ``predict`` pays it on its first call only)."""
        signature = tuple((a.shape[1:], a.dtype) for a in (y, *args))
        if self.params is not None and signature in self._checked:
            return
        z, y0, args0 = jnp.zeros(self.x_shape), y[0], tuple(a[0] for a in args)
        what = f"x of shape {self.x_shape} and one instance of y and of the args"
        _checks.output_shape("score_fn", self.score_fn, (z, y0, *args0), self.x_shape, what,
                             fix="it returns ∇ₓ log p(y|x) for ONE instance, shaped like x")  # fmt: skip
        if self.params is None:
            self.params = self._initial_params(y0, args0)
            self._instance = (y0, args0)
        h0 = self._network.hidden(self.dimensions)
        _checks.output_shape(
            "model", lambda *a: self._network.apply(*a)[0], (self.params, z, y0, z, h0), self.x_shape,
            "(x, y, score, h) of one instance", fix="its update dx should be shaped like x",
        )  # fmt: skip
        self._checked.add(signature)

    def _batch(self, name: str, y: Any, x: Any | None, args: tuple) -> tuple:
        return data.check_batch(name, y, x, args, self.x_shape)

    # ----------------------------------------------------------- inference
    def forward(self, y: Any, *args: Any) -> jax.Array:
        """Model-space iterates: float(T, batch, *dimensions, channels) (T + 1 with ``"model"`` initialisation)."""
        y, _, args = self._batch("y", y, None, args)
        self._ensure_params(y, args)
        return self._iterates(self.params, y, args)

    def predict(self, y: Any, *args: Any) -> jax.Array:
        """The reconstruction ``ψ(z_T)``: float(batch, *dimensions, channels); ``y`` and ``args`` batched."""
        y, _, args = self._batch("y", y, None, args)
        self._ensure_params(y, args)
        return self._predict(self.params, y, args)

    def loss_fn(self, y: Any, x: Any, *args: Any, time_weights: Any = None) -> jax.Array:
        """The training loss on a batch: mean over it of ``Σₜ wₜ ‖zₜ − ψ⁻¹(x)‖²`` (see :func:`core.time_weights`)."""
        y, x, args = self._batch("y", y, x, args)
        self._ensure_params(y, args)
        weights = core.time_weights(time_weights, self._n_iterates)
        return self._loss(self.params, (y, x, args), weights)

    @property
    def _n_iterates(self) -> int:
        return self.T + (self.config.initialization == "model")

    # ------------------------------------------------------------- fitting
    def fit(
        self,
        dataset: Any = None,
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
        ema_decay: float = 0.0,
        scheduler: Callable | None = None,
        optimizer: optax.GradientTransformation | None = None,
        time_weights: Any = None,
        key: jax.Array | None = None,
        devices: list | None = None,
        checkpoints_directory: str | os.PathLike | None = None,
        checkpoints: int = 10,
        models_to_keep: int = 3,
        progress: bool = True,
    ) -> list[float]:
        """Train on ``dataset`` or on fresh draws of ``simulator(key) -> (y, x, *args)`` (one
        instance; the better choice: a RIM overfits a finite training set).

        Args:
            dataset: a tuple ``(y, x, *args)`` of arrays with a leading instance axis, or any
                iterable of such batches (a list, ``tf.data``, grain, a generator), started again
                when it runs out.
            epochs: most epochs of ``n_iterations_in_epoch`` steps (default: one pass over
                ``dataset``, or 100 with a simulator).
            learning_rate: Adam's, unless ``scheduler`` (an optax schedule of the step) or
                ``optimizer`` (an optax transformation) is given.
            batch_size: instances per step (distinct ones of an array ``dataset``, drawn at random;
                an iterable's batches have their own size).
            validation: ``(y, x, *args)`` evaluated at every step; its loss is early stopping's
                and picks the weights kept (otherwise the last ones are).
            patience: epochs without a new best validation loss before stopping (needs ``validation``).
            warmup: steps over which the learning rate ramps up linearly from 0.
            clip: clip the gradients' global norm to it (when positive).
            ema_decay: keep an exponential moving average of the weights with this decay (0: none);
                validation, the kept weights and checkpoints then use the average.
            time_weights: the loss's per-step weights (see :func:`imnn.rim.core.time_weights`).
            key: PRNG key for the batches (default: continues the previous fit's stream).
            devices: train data-parallel over these devices (the batch split across them, the
                weights replicated); ``batch_size`` must be a multiple of their number.
            checkpoints_directory: write a checkpoint there every ``checkpoints`` epochs and at
                the end, keeping the ``models_to_keep`` newest; a fresh RIM resumes from the newest.
            progress: show a progress bar.

        Returns:
            The mean training loss of each epoch of this fit (``history`` keeps all of them).
            Calling ``fit`` again with the same settings continues the optimiser and compiles nothing.
        """
        if (dataset is None) == (simulator is None):
            raise ValueError("give exactly one of `dataset` ((y, x, *args) arrays or batches) and `simulator`")
        epochs = _checks.positive_int("epochs", epochs)
        batch_size = _checks.positive_int("batch_size", batch_size)
        if patience is not None:
            patience = _checks.positive_int("patience", patience)
            if validation is None:
                raise ValueError("`patience` needs `validation` data: early stopping watches the validation loss")
        every, keep = (
            _checks.positive_int("checkpoints", checkpoints),
            _checks.positive_int("models_to_keep", models_to_keep),
        )
        if isinstance(ema_decay, bool) or not (isinstance(ema_decay, (int, float)) and 0 <= ema_decay < 1):
            raise ValueError(f"`ema_decay` should be a number in [0, 1) (0: no average), but is {ema_decay!r}")
        place, sharding, devices = aggregation.placement(
            devices, batch_size if dataset is None or fitting.is_arrays(dataset) else None
        )
        directory = checkpoints_directory if checkpoints_directory is not None else self.checkpoints_directory
        if directory is not None:
            os.makedirs(directory, exist_ok=True)
            if self.params is None and self._state is None and store.files(directory):
                fitting.resume_from(self, directory)
        stream = None
        if simulator is not None:
            train = data.simulated_example(simulator, self.x_shape)
        elif fitting.is_arrays(dataset):
            train = self._batch("dataset", *data.unpack("dataset", dataset))
            if batch_size > train[0].shape[0]:
                raise ValueError(f"`batch_size` (={batch_size}) exceeds the {train[0].shape[0]} instances of `dataset`")
        else:
            stream = data.Batches(dataset, self.x_shape, len(devices) or 1, place)
            train = stream.first
        val_data = None if validation is None else self._batch("validation", *data.unpack("validation", validation))
        n_per_epoch = fitting.iterations_per_epoch(n_iterations_in_epoch, dataset, simulator, stream, train, batch_size)
        self._ensure_params(train[0], train[2])
        weights = core.time_weights(time_weights, self._n_iterates)
        description, make_optimizer = training.fit_optimiser(
            learning_rate, warmup, clip, scheduler, optimizer, ema_decay
        )
        description = {**description, "batch_size": batch_size if stream is None else 0}
        setting = (*description.values(), id(optimizer), id(scheduler), id(simulator), stream is not None,
                   val_data is not None, tuple(d.id for d in devices))  # fmt: skip
        validated = val_data is not None
        chunk, monitor, wrapped = fitting.compiled(
            self, setting, make_optimizer, batch_size, simulator, sharding, stream, validated
        )
        state = place(fitting.start_state(self, setting, description, wrapped, key, ema_decay > 0))
        max_iterations = epochs * n_per_epoch
        settings = engine.Settings(
            hyper=(weights,),
            patience=jnp.int32(max_iterations + 1 if patience is None else patience * n_per_epoch),
            min_iterations=jnp.int32(0),
            max_iterations=jnp.int32(max_iterations),
        )
        save = (
            None
            if directory is None
            else fitting.checkpointer(self, directory, every, keep, n_per_epoch, validated, setting, description)
        )
        chunk_length = 1 if stream is not None else fitting.chunk_length(n_per_epoch)  # a stream loses no batch
        outcome = engine.run(
            chunk, state, settings, stream if stream is not None else place(None if simulator else train),
            place(val_data), monitor=monitor, max_iterations=max_iterations, print_rate=chunk_length,
            show_progress=progress, on_chunk=save, epoch_length=n_per_epoch,
        )  # fmt: skip
        with interrupts.deferred():
            losses = fitting.absorb(self, outcome, n_per_epoch, validated, setting, description)
        if save is not None:  # the progress, before the error (if any) is the user's
            save(outcome, final=True)
        if outcome.error is not None:
            raise outcome.error
        return losses

def _links(link: str | Callable | None, inverse: Callable | None) -> tuple[Callable, Callable, str | None]:
    """``(ψ, ψ⁻¹, name)`` from a name of ``store.LINKS`` or a function and its inverse (no name)."""
    if link is None or isinstance(link, str):
        if inverse is not None:
            raise ValueError("`inverse_link_function` was given without `link_function` (a function)")
        name = _checks.one_of("link_function", link or "identity", tuple(store.LINKS))
        return (*store.LINKS[name], name)
    if not callable(link):
        raise TypeError(f"`link_function` should be a name or a function, but is {describe(link)}")
    if inverse is None:
        raise ValueError("`link_function` needs `inverse_link_function` (the loss compares in model space)")
    return link, inverse, None


_DEFAULTS = {name: p.default for name, p in inspect.signature(RIM.__init__).parameters.items() if name != "self"}
