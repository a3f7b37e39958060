"""Fit an IMNN from simulations stored as TFRecords, streamed through tf.data (``pip install "imnn[tf]"``).

Writes 2 000 fiducial simulations of the Gaussian mean-and-variance problem
(10 draws; analytic |F| = 50) and the exact derivatives of the first 1 000 to
TFRecord shards, the same again as a validation set, then fits a
DatasetGradientIMNN reading them with one tf.data pipeline per device, exactly
as the reference IMNN documented them (``skip``/``take``/``batch``/``repeat``).
Only batches of ``n_per_device`` simulations are in memory at any time.

Run: ``python examples/tfrecords.py [DIRECTORY]`` (records go to a temporary directory
by default; ``IMNN_EXAMPLE_ITERATIONS`` caps the iterations).
"""

import functools
import os
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tensorflow as tf
from jax.example_libraries import stax

import imnn
from imnn.problems import GaussianMeanVariance

ITERATIONS = int(os.environ.get("IMNN_EXAMPLE_ITERATIONS", 1000))
N_S, N_D, N_PER_DEVICE = 2000, 1000, 250


def write(problem, key, directory, validation):
    """Simulate and write the records; in real use ``get_simulation`` runs your simulator."""
    sims = problem.simulations(key, N_S, N_D)
    writer = imnn.TFRecords(record_size=0.05, input_shape=problem.input_shape)  # 50 kB shards for the demo
    writer.write_record(N_S, lambda seed: np.asarray(sims.fiducial[seed]), validation=validation, directory=directory)
    name = "validation_derivative" if validation else "derivative"
    writer.write_record(N_D, lambda seed: np.asarray(sims.derivative[seed]), directory=directory, filename=name)
    return writer


def pipelines(writer, directory, prefix, n_devices, n_params):
    """``main`` and ``remaining`` iterators, one per device: device i reads its 1/n_devices share."""

    def records(name, parser):
        files = sorted(str(p) for p in Path(directory).glob(f"{prefix}{name}_*.tfrecords"))
        return tf.data.TFRecordDataset(files).map(parser, num_parallel_calls=tf.data.AUTOTUNE)

    derivative_parser = functools.partial(writer.derivative_parser, n_params=n_params)
    share, rest = N_D // n_devices, (N_S - N_D) // n_devices
    main = [
        tf.data.Dataset.zip((
            records("fiducial", writer.parser).skip(i * share).take(share),
            records("derivative", derivative_parser).skip(i * share).take(share),
        )).batch(N_PER_DEVICE).repeat().prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
        for i in range(n_devices)
    ]  # fmt: skip
    remaining = [
        records("fiducial", writer.parser).skip(N_D + i * rest).take(rest)
        .batch(N_PER_DEVICE).repeat().prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
        for i in range(n_devices)
    ]  # fmt: skip
    return {f"{prefix}main": main, f"{prefix}remaining": remaining}


def main(directory):
    problem = GaussianMeanVariance(n_data=10)
    writer = write(problem, jax.random.key(10), directory, validation=False)
    write(problem, jax.random.key(11), directory, validation=True)
    print(f"wrote {len(list(Path(directory).glob('*.tfrecords')))} TFRecord shards to {directory}")

    devices = jax.devices()
    settings = dict(
        n_s=N_S, n_d=N_D, n_params=2, n_summaries=2, input_shape=problem.input_shape,
        θ_fid=jnp.array(problem.θ_fid), optimiser=optax.adam(1e-3),
        model=stax.serial(stax.Dense(128), stax.LeakyRelu, stax.Dense(128), stax.LeakyRelu, stax.Dense(2)),
    )  # fmt: skip
    model = imnn.IMNN(
        **settings, key_or_state=jax.random.key(0),
        **pipelines(writer, directory, "", len(devices), 2),
        **pipelines(writer, directory, "validation_", len(devices), 2),
        host=jax.devices("cpu")[0], devices=devices, n_per_device=N_PER_DEVICE,
    )  # fmt: skip
    print(f"built {type(model).__name__} over {len(devices)} device(s)")
    model.fit(λ=10.0, ϵ=0.1, patience=100, min_iterations=min(100, ITERATIONS), max_iterations=ITERATIONS,
              print_rate=10)  # fmt: skip

    detF, analytic = np.linalg.det(problem.measured_fisher(model, jax.random.key(12))), np.linalg.det(problem.fisher())
    print(f"|F| of the IMNN summaries: {detF:.1f}   analytic |F|: {analytic:.1f}   ({detF / analytic:.0%})")

if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as temporary:
            main(temporary)
