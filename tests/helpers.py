"""Small IMNNs on the Gaussian problem, shared by the factory and bad-input tests."""

import contextlib
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.example_libraries import stax

import imnn
from imnn.problems import GaussianMeanVariance

N_S, N_D, N_PARAMS, N_SUMMARIES = 100, 50, 2, 2
PROBLEM = GaussianMeanVariance(n_data=10)
INPUT_SHAPE = PROBLEM.input_shape
θ_FID = jnp.array(PROBLEM.θ_fid)
FIT = dict(λ=10.0, ϵ=0.1, min_iterations=0)
KINDS = ["simulator", "gradient", "numerical"]
STORED = ["gradient", "numerical"]


def stax_model(n_out=N_SUMMARIES):
    return stax.serial(stax.Dense(8), stax.LeakyRelu, stax.Dense(n_out))


def common(**overrides):
    """The arguments every IMNN takes, with a stax model and optax Adam."""
    kwargs = dict(
        n_s=N_S, n_d=N_D, n_params=N_PARAMS, n_summaries=N_SUMMARIES, input_shape=INPUT_SHAPE,
        θ_fid=θ_FID, model=stax_model(), optimiser=optax.adam(1e-3),
        key_or_state=jax.random.key(0), verbose=False,
    )  # fmt: skip
    kwargs.update(overrides)
    return kwargs


def source_kwargs(kind, sims, validation_sims=None, **overrides):
    """Data arguments of a ``"simulator"``, ``"gradient"`` or ``"numerical"`` IMNN."""
    if kind == "simulator":
        return dict(simulator=PROBLEM.simulator, **overrides)

    def pick(s):
        return s.derivative if kind == "gradient" else s.numerical_derivative

    kwargs = dict(fiducial=sims.fiducial, derivative=pick(sims))
    if kind == "numerical":
        kwargs["δθ"] = sims.δθ
    if validation_sims is not None:
        kwargs.update(validation_fiducial=validation_sims.fiducial, validation_derivative=pick(validation_sims))
    kwargs.update(overrides)
    return kwargs


@contextlib.contextmanager
def compilations():
    """Collect the messages of every XLA compilation in the block."""
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            yield messages
    finally:
        logger.removeHandler(handler)
    messages[:] = [m for m in messages if "ompil" in m]


class NoOutputBias(nn.Module):
    """A small MLP whose last layer has no bias.

    |F| is unchanged by shifting the summaries, so an output bias gets an exactly
    zero gradient; Adam turns rounding noise in it into ±learning-rate steps, which
    would make two mathematically equal fits differ in that bias alone.
    """

    @nn.compact
    def __call__(self, d):
        return nn.Dense(N_SUMMARIES, use_bias=False)(nn.leaky_relu(nn.Dense(16)(d.reshape(-1))))


def aggregation_pair(kind, n_devices, n_s=203, n_d=101, n_per_device=7, key=1):
    """An in-memory IMNN and its aggregated twin on the same data (sizes leave the last batch short)."""
    sims = PROBLEM.simulations(jax.random.key(key), n_s, n_d)
    validation = PROBLEM.simulations(jax.random.key(key + 1), n_s, n_d)
    arguments = dict(**common(n_s=n_s, n_d=n_d, model=NoOutputBias(), optimiser=optax.adam(1e-2)),
                     **source_kwargs(kind, sims, validation if kind != "simulator" else None))  # fmt: skip
    devices = jax.devices()[:n_devices]
    aggregation = dict(host=devices[0], devices=devices, n_per_device=n_per_device)
    return imnn.IMNN(**arguments), imnn.IMNN(**arguments, **aggregation)


def dataset_pair(kind, n_devices, n_s=204, n_d=100, n_per_device=7, key=1, validation=True):
    """An in-memory IMNN and its dataset twin reading the same data through per-device generators.

    The sizes leave a short last batch on every device, for every kind of batch.
    """
    sims = PROBLEM.simulations(jax.random.key(key), n_s, n_d)
    valid = PROBLEM.simulations(jax.random.key(key + 1), n_s, n_d) if validation else None
    arguments = common(n_s=n_s, n_d=n_d, model=NoOutputBias(), optimiser=optax.adam(1e-2))
    in_memory = imnn.IMNN(**arguments, **source_kwargs(kind, sims, valid))
    make = imnn.loaders.gradient_dataset if kind == "gradient" else imnn.loaders.numerical_dataset
    iterators = {}
    for prefix, s in [("", sims)] + ([("validation_", valid)] if validation else []):
        derivative = s.derivative if kind == "gradient" else s.numerical_derivative
        iterators |= make(np.asarray(s.fiducial), np.asarray(derivative), n_devices, n_per_device, prefix)
    devices = jax.devices()[:n_devices]
    extra = dict(δθ=sims.δθ) if kind == "numerical" else {}
    dataset = imnn.IMNN(**arguments, **iterators, **extra, host=devices[0], devices=devices, n_per_device=n_per_device)
    return in_memory, dataset


def multihost_results(iterations=4):
    """Fit the aggregated IMNNs over all of ``jax.devices()``; arrays to compare across process layouts."""
    results = {}
    for kind in KINDS:
        _, model = aggregation_pair(kind, len(jax.devices()), n_per_device=5)
        model.fit(10.0, 0.1, rng=jax.random.key(3), min_iterations=iterations, max_iterations=iterations)
        for i, leaf in enumerate(jax.tree.leaves(model.final_w)):
            results[f"{kind}_w{i}"] = np.asarray(jax.device_get(leaf))
        results[f"{kind}_detF"] = model.history["detF"]
    for kind in STORED:
        _, model = dataset_pair(kind, len(jax.devices()), validation=False)
        model.fit(10.0, 0.1, min_iterations=iterations, max_iterations=iterations)
        results[f"dataset_{kind}_w"] = np.asarray(jax.device_get(jax.tree.leaves(model.final_w)[0]))
        results[f"dataset_{kind}_detF"] = model.history["detF"]
    return results


class Quadratic(nn.Module):
    """Each datum and its square, mixed linearly: enough to find the Gaussian problem's sufficient statistics."""

    @nn.compact
    def __call__(self, d):
        return nn.Dense(2)(jnp.concatenate([d, d**2]))


def fitted_quadratic(n, patience, max_iterations):
    """A GradientIMNN with :class:`Quadratic` features fitted at θ_fid = (0, 1) on ``n`` simulations."""
    sims = PROBLEM.simulations(jax.random.key(0), n, n)
    model = imnn.GradientIMNN(
        n_s=n, n_d=n, n_params=2, n_summaries=2, input_shape=(10,), θ_fid=θ_FID,
        model=Quadratic(), optimiser=optax.adam(0.1), key_or_state=jax.random.key(1),
        fiducial=sims.fiducial, derivative=sims.derivative, verbose=False,
    )  # fmt: skip
    return model.fit(10.0, 0.1, patience=patience, max_iterations=max_iterations)
