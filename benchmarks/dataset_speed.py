"""What does streaming simulations from iterators cost, and does reading overlap computing?

Problem: the Gaussian mean-and-variance problem with ``--n-data`` draws per simulation
(default 1000, i.e. 4 kB simulations), n_s = n_d = 1000 with exact derivatives, the
3 × 128 MLP of ``_shared.py``, ``optax.adam(1e-3)``, ``fit(λ=10, ϵ=0.1)``, batches of
``--n-per-device`` (default 250: 4 batches per pass) on one device.

Timed in one run, ms per iteration (median of ``-r`` fits of ``-n`` iterations each):

- ``hand-written``: a minimal ``jax.jit(lax.fori_loop)`` of the same maths on arrays in
  memory (the floor);
- ``GradientIMNN`` (in memory) and ``AggregatedGradientIMNN`` (the same batched two
  passes with the data laid out on the device);
- ``DatasetGradientIMNN`` fed by :mod:`imnn.loaders` from numpy arrays, from ``.npy``
  memory maps (warm page cache), and — when TensorFlow is installed — from TFRecords
  through reference-style ``tf.data`` pipelines;
- overlap: the numpy feed slowed by a ``time.sleep`` per batch (a slow disk, ``--latency``
  ms; default about one batch's compute time), with ``prefetch`` 0 and 2, against the
  no-overlap prediction ``numpy feed + batches × latency``.

Run:  python benchmarks/dataset_speed.py          (~1 min on 2 CPU cores)
      python benchmarks/dataset_speed.py --n-data 10 -n 50
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _shared import N_SUMMARIES, fit, network, λ, ϵ

import imnn
from imnn.problems import GaussianMeanVariance


def handwritten(apply, w, fiducial, derivative, n_iterations):
    """ms per iteration of a minimal jitted loop of the gradient-IMNN maths."""
    optimiser = optax.adam(1e-3)
    α = imnn.fisher.alpha(λ, ϵ)

    def loss(w):
        x = jax.vmap(apply, (None, 0))(w, fiducial)

        def tangents(d, dd):  # one JVP per parameter column of dd/dθ
            return jax.vmap(lambda t: jax.jvp(lambda d: apply(w, d), (d,), (t,))[1], -1, -1)(dd)

        dx_dθ = jax.vmap(tangents)(fiducial, derivative)
        C = jnp.cov(x, rowvar=False)
        invC = jnp.linalg.inv(C)
        dμ = dx_dθ.mean(0)
        F = dμ.T @ invC @ dμ
        eye = jnp.eye(C.shape[0])
        Λ2 = jnp.linalg.norm(C - eye) + jnp.linalg.norm(invC - eye)
        r = λ * Λ2 / (Λ2 + jnp.exp(-α * Λ2))
        return -jnp.linalg.slogdet(F)[1] + r * Λ2

    @functools.partial(jax.jit, static_argnums=2)
    def run(w, opt_state, n):
        def step(_, carry):
            w, opt_state = carry
            updates, opt_state = optimiser.update(jax.grad(loss)(w), opt_state, w)
            return optax.apply_updates(w, updates), opt_state

        return jax.lax.fori_loop(0, n, step, (w, opt_state))

    opt_state = optimiser.init(w)
    jax.block_until_ready(run(w, opt_state, n_iterations))
    started = time.perf_counter()
    jax.block_until_ready(run(w, opt_state, n_iterations))
    return 1e3 * (time.perf_counter() - started) / n_iterations


def slowed(iterators, latency):
    def slow(iterator):
        for batch in iterator:
            time.sleep(latency)
            yield batch

    return [slow(it) for it in iterators]


def tfrecord_iterators(directory, fiducial, derivative, n_per_device):
    import tensorflow as tf

    writer = imnn.TFRecords(record_size=50.0)
    writer.write_record(len(fiducial), lambda seed: fiducial[seed], directory=directory)
    writer.write_record(len(derivative), lambda seed: derivative[seed], directory=directory, filename="derivative")

    def read(name, parser):
        files = sorted(str(p) for p in Path(directory).glob(f"{name}_*.tfrecords"))
        return tf.data.TFRecordDataset(files).map(parser, num_parallel_calls=tf.data.AUTOTUNE)

    derivative_parser = functools.partial(writer.derivative_parser, n_params=derivative.shape[-1])
    pairs = tf.data.Dataset.zip((read("fiducial", writer.parser), read("derivative", derivative_parser)))
    batches = pairs.batch(n_per_device).repeat().prefetch(tf.data.AUTOTUNE)
    return {"main": [batches.as_numpy_iterator()], "remaining": []}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-data", type=int, default=1000)
    parser.add_argument("--n-per-device", type=int, default=250)
    parser.add_argument("--latency", type=float, default=None, help="ms of simulated disk latency per batch")
    parser.add_argument("-n", type=int, default=20, help="iterations per timed fit")
    parser.add_argument("-r", type=int, default=3, help="timed fits per configuration")
    args = parser.parse_args()
    n_s = n_d = 1000
    problem = GaussianMeanVariance(n_data=args.n_data)
    sims = problem.simulations(jax.random.key(0), n_s, n_d)
    fiducial, derivative = np.asarray(sims.fiducial), np.asarray(sims.derivative)
    device = jax.devices()[0]
    batching = dict(host=device, devices=[device], n_per_device=args.n_per_device)
    common = dict(
        n_s=n_s, n_d=n_d, n_params=2, n_summaries=N_SUMMARIES, input_shape=problem.input_shape,
        θ_fid=problem.θ_fid, model=network(), optimiser=optax.adam(1e-3), key_or_state=jax.random.key(1),
        verbose=False,
    )  # fmt: skip
    per_batch = -(-n_s // args.n_per_device)

    def timed(make):
        model = make()
        fit(model, 2)  # compile
        return statistics.median(1e3 * fit(model, args.n) / args.n for _ in range(args.r))

    def dataset(iterators, **kwargs):
        return lambda: imnn.DatasetGradientIMNN(**common, **iterators(), **batching, **kwargs)

    init, apply = network()
    _, w = init(jax.random.key(1), problem.input_shape)
    results = {"hand-written jit loop (in memory)": handwritten(apply, w, jnp.asarray(fiducial),
                                                                jnp.asarray(derivative), args.n)}  # fmt: skip
    results["GradientIMNN"] = timed(lambda: imnn.GradientIMNN(**common, fiducial=fiducial, derivative=derivative))
    results["AggregatedGradientIMNN"] = timed(
        lambda: imnn.AggregatedGradientIMNN(**common, fiducial=fiducial, derivative=derivative, **batching)
    )
    numpy_feed = functools.partial(imnn.loaders.gradient_dataset, fiducial, derivative, 1, args.n_per_device)
    results["DatasetGradientIMNN, numpy arrays"] = timed(dataset(numpy_feed))
    with tempfile.TemporaryDirectory() as directory:
        np.save(f"{directory}/fiducial.npy", fiducial)
        np.save(f"{directory}/derivative.npy", derivative)
        maps = [np.load(f"{directory}/{name}.npy", mmap_mode="r") for name in ("fiducial", "derivative")]
        results["DatasetGradientIMNN, .npy memory maps"] = timed(
            dataset(lambda: imnn.loaders.gradient_dataset(*maps, 1, args.n_per_device))
        )
        try:
            import tensorflow  # noqa: F401

            records = tfrecord_iterators(directory, fiducial, derivative, args.n_per_device)
            results["DatasetGradientIMNN, TFRecords (tf.data)"] = timed(dataset(lambda: records))
        except ImportError:
            print("(TensorFlow not installed: TFRecords skipped; pip install '.[tf]')")
    streaming = results["DatasetGradientIMNN, numpy arrays"]
    compute_per_batch = results["AggregatedGradientIMNN"] / (2 * per_batch)
    latency = (args.latency if args.latency is not None else compute_per_batch) / 1e3
    for prefetch in (0, 2):
        slow_feed = lambda: {k: slowed(v, latency) for k, v in numpy_feed().items()}
        results[f"numpy arrays + {1e3 * latency:.1f} ms/batch latency, prefetch={prefetch}"] = timed(
            dataset(slow_feed, prefetch=prefetch)
        )
    no_overlap = streaming + 2 * per_batch * 1e3 * latency

    floor = results["hand-written jit loop (in memory)"]
    print(f"\nGaussian, n_s = n_d = {n_s}, {args.n_data} numbers per simulation, batches of {args.n_per_device} "
          f"({per_batch} per pass), {args.n} iterations × {args.r}, {jax.device_count()} device(s)\n")  # fmt: skip
    print(f"{'':55s} {'ms/it':>8s} {'÷ hand-written':>15s} {'÷ aggregated':>13s}")
    for name, value in results.items():
        print(f"{name:55s} {value:8.2f} {value / floor:15.2f} {value / results['AggregatedGradientIMNN']:13.2f}")
    print(f"{'no-overlap prediction with that latency':55s} {no_overlap:8.2f}")


if __name__ == "__main__":
    main()
