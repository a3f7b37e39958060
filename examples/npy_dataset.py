"""Fit an IMNN from simulations on disk without TensorFlow: ``.npy`` files read through memory maps.

Simulations are written one by one into ``.npy`` files opened with
``np.lib.format.open_memmap`` (so they never all sit in memory), then read
back with ``np.load(..., mmap_mode="r")``: :mod:`imnn.loaders` turns them into
the per-device iterators a DatasetGradientIMNN streams from, reading each
batch from disk when it is needed. The problem is the Gaussian
mean-and-variance one (10 draws; analytic |F| = 50).

Run: ``python examples/npy_dataset.py [DIRECTORY]`` (a temporary directory by default;
``IMNN_EXAMPLE_ITERATIONS`` caps the iterations).
"""

import os
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.example_libraries import stax

import imnn
from imnn.problems import GaussianMeanVariance

ITERATIONS = int(os.environ.get("IMNN_EXAMPLE_ITERATIONS", 1000))
N_S, N_D, N_PER_DEVICE = 2000, 1000, 250


def write(problem, key, directory, prefix):
    """Chunk by chunk into memory-mapped files; in real use, call your simulator here."""
    fiducial = np.lib.format.open_memmap(f"{directory}/{prefix}fiducial.npy", mode="w+", dtype=np.float32,
                                         shape=(N_S, *problem.input_shape))  # fmt: skip
    derivative = np.lib.format.open_memmap(f"{directory}/{prefix}derivative.npy", mode="w+", dtype=np.float32,
                                           shape=(N_D, *problem.input_shape, 2))  # fmt: skip
    for start, chunk_key in zip(range(0, N_S, 500), jax.random.split(key, N_S // 500)):
        sims = problem.simulations(chunk_key, 500, 500)
        fiducial[start : start + 500] = sims.fiducial
        if start < N_D:
            derivative[start : start + 500] = sims.derivative
    fiducial.flush()
    derivative.flush()


def main(directory):
    problem = GaussianMeanVariance(n_data=10)
    for prefix, key in (("", 10), ("validation_", 11)):
        write(problem, jax.random.key(key), directory, prefix)
    devices = jax.devices()
    iterators = {}
    for prefix in ("", "validation_"):
        fiducial = np.load(f"{directory}/{prefix}fiducial.npy", mmap_mode="r")
        derivative = np.load(f"{directory}/{prefix}derivative.npy", mmap_mode="r")
        iterators |= imnn.loaders.gradient_dataset(fiducial, derivative, len(devices), N_PER_DEVICE, prefix)

    settings = dict(
        n_s=N_S, n_d=N_D, n_params=2, n_summaries=2, input_shape=problem.input_shape,
        θ_fid=jnp.array(problem.θ_fid), optimiser=optax.adam(1e-3),
        model=stax.serial(stax.Dense(128), stax.LeakyRelu, stax.Dense(128), stax.LeakyRelu, stax.Dense(2)),
    )  # fmt: skip
    model = imnn.IMNN(**settings, key_or_state=jax.random.key(0), **iterators,
                      host=jax.devices("cpu")[0], devices=devices, n_per_device=N_PER_DEVICE)  # fmt: skip
    print(f"built {type(model).__name__} over {len(devices)} device(s) from memory-mapped .npy files")
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
