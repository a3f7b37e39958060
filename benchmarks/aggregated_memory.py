"""Peak memory and time per iteration of AggregatedGradientIMNN vs GradientIMNN as n_s grows.

Problem: 64 × 64 single-channel Gaussian random fields, θ = (A, B): white noise
filtered in Fourier space by ``A k^(−B/2)`` (the k = 0 mode removed), θ_fid = (1, 2),
normalised to unit variance at θ_fid. ``dd/dθ`` is ``jax.jacfwd`` of the generator.
n_s = n_d, n_params = n_summaries = 2. Network (flax.linen): Conv(8, 3×3, stride 2) →
leaky_relu → Conv(16, 3×3, stride 2) → leaky_relu → mean over space → Dense(2);
``optax.adam(1e-3)``, ``fit(λ=10, ϵ=0.1)``. The aggregated class runs with
``host=jax.devices()[0], devices=jax.devices()`` and ``n_per_device`` (default 250).

Two ways to write the convolutions (``--conv``), the same layers with the same
parameters and the same maths:

- ``patches`` (default): ``lax.conv_general_dilated_patches`` then a matmul with the
  kernel. Used by default because of the next point.
- ``flax``: ``flax.linen.Conv``. On XLA:CPU its kernel gradient is a convolution
  with non-canonical dimension numbers (``f01b_i01o->01bf``) which XLA's
  ``convolution-canonicalization`` pass rewrites only in the entry computation; inside
  a while loop — every IMNN fit runs its iterations in ``lax.while_loop``, and the
  aggregated passes are ``lax.map``/``lax.scan`` — it is compiled by the naive
  elemental emitter, 5–20× slower. ``--conv flax`` measures that (slowly).

Measured, each configuration in a fresh subprocess (so that none pollutes another's
peak), with the peak resident set size of the process (``VmHWM`` of
``/proc/self/status``, reset between phases by writing 5 to ``/proc/self/clear_refs``):

1. ``data``: fiducial (n_s × 64×64 × 4 B) + derivative (n_d × 64×64×2 × 4 B), generated
   in chunks into numpy arrays and handed to jax with ``jax.device_put`` (the numpy
   arrays are then dropped), as a user would; the constructor gets the jax arrays;
2. ``construct``: peak RSS during the constructor above the RSS before it, in MiB and
   in units of the data size (≈ the copies of the data it makes, plus ~0.1 GiB of
   compilation that dominates at small n_s);
3. ``held``: bytes of all live jax arrays after construction, the user's arrays deleted
   (the data as laid out by the class);
4. ``1st fit`` / ``steady``: peak RSS above the RSS after construction during the
   first ``fit`` (compilation + 1 iteration + the statistics pass) and during the timed
   fits — the working memory of the fit (activations, their tangents and the backward
   pass; the data are already resident and not counted);
5. ``beyond``: largest RSS while fitting − RSS after imports − data: everything but
   the data (compiler, runtime, activations); ``total``: the largest RSS of the
   process, construction included;
6. ``s/it``: ``(T(fit(k iterations)) − T(set_F_statistics())) / k`` once compiled.
   The two classes of a size run back to back in alternating order (ABBA over sizes),
   and the load average is reported; ratios are of those adjacent runs.

The in-memory class is skipped at sizes where its peak, extrapolated linearly from
the smaller sizes, would exceed ``--max-gib``.

Pull-back comparison (``--pullback-n``, default 2000): one aggregated loss-and-gradient
evaluation (pass 1, loss, pass 2) through imnn's executor
(:func:`imnn.aggregation.aggregated`, pass 2 = one ``jax.vjp`` per batch) against the
same evaluation with a hand-written pass 2 as IMNN 0.3.2 did it: per simulation
(vmapped over the batch) ``jax.jacrev`` of its summaries and summary derivatives
w.r.t. every weight — the full Jacobian, materialised — contracted with the
cotangents by ``einsum`` and summed over the batch. Time per evaluation, and peak
working memory, each method in its own subprocess; the gradients are compared.

Largest n_s (``--largest``): the largest n_s whose aggregated fit fits in ``--budget-gib``
(default 18 GiB, this machine has 24 GiB), from the measured per-simulation data size,
the constructor's copies (measured above) and the fit's working memory at
``n_per_device``; it is then run for real (data generation, construction, one compile
fit, one timed iteration) and its seconds per iteration reported. ``--largest-n N``
runs a given n_s instead.

Run:  python benchmarks/aggregated_memory.py                        (~4 min on 2 CPU cores)
      python benchmarks/aggregated_memory.py --sizes 1000,2000,4000,8000,16000,32000 --pullback-n 0
      python benchmarks/aggregated_memory.py --conv flax --sizes 1000,2000 --pullback-n 0
      python benchmarks/aggregated_memory.py --sizes 4000,8000 --pullback-n 0 --largest   (~8 min more)
      IMNN_BENCH_SIZES=1000,4000 IMNN_BENCH_N_PER_DEVICE=500 python benchmarks/aggregated_memory.py
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import subprocess
import sys
import time

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import imnn

FIELD = 64
INPUT_SHAPE = (FIELD, FIELD, 1)
θ_FID = (1.0, 2.0)  # (A, B): amplitude and slope of the power spectrum
N_PARAMS = N_SUMMARIES = 2
λ, ϵ = 10.0, 0.1
LEARNING_RATE = 1e-3
WEIGHTS_KEY, DATA_SEED = 0, 1
CHUNK = 500  # simulations generated per jitted call
MIB = 2**20
BYTES_PER_SIMULATION = 4 * math.prod(INPUT_SHAPE) * (1 + N_PARAMS)  # fiducial + derivative, float32


# ------------------------------------------------------------------- fields
_k = np.sqrt(np.add.outer(np.fft.fftfreq(FIELD) ** 2, np.fft.fftfreq(FIELD) ** 2)) * FIELD
_k[0, 0] = 1.0
LOG_K = np.log(_k).astype(np.float32)
NOT_MEAN = (np.arange(FIELD * FIELD).reshape(FIELD, FIELD) != 0).astype(np.float32)
# Unit variance at θ_fid: var = Σ_{k≠0} |A k^(−B/2)|² / N² for unit white noise.
NORM = float(FIELD / np.sqrt(np.sum(NOT_MEAN * _k ** (-θ_FID[1])) * θ_FID[0] ** 2))


def field(key: jax.Array, θ: jax.Array) -> jax.Array:
    """One Gaussian random field, float(64, 64, 1), differentiable in θ = (A, B)."""
    amplitude = NORM * θ[0] * jnp.exp(-0.5 * θ[1] * LOG_K) * NOT_MEAN
    noise = jax.random.normal(key, (FIELD, FIELD))
    return jnp.real(jnp.fft.ifft2(jnp.fft.fft2(noise) * amplitude))[..., None]


@jax.jit
def _fields(keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    θ = jnp.asarray(θ_FID, jnp.float32)
    d = jax.vmap(field, (0, None))(keys, θ)
    dd_dθ = jax.vmap(jax.jacfwd(field, argnums=1), (0, None))(keys, θ)  # (n, 64, 64, 1, 2)
    return d, dd_dθ


def generate(n: int, seed: int = DATA_SEED) -> tuple[np.ndarray, np.ndarray]:
    """``n`` fields and their θ-derivatives as numpy arrays, filled a chunk at a time (peak ≈ data)."""
    fiducial = np.empty((n, *INPUT_SHAPE), np.float32)
    derivative = np.empty((n, *INPUT_SHAPE, N_PARAMS), np.float32)
    keys = jax.random.split(jax.random.key(seed), -(-n // CHUNK) * CHUNK)
    for start in range(0, n, CHUNK):
        d, dd = _fields(keys[start : start + CHUNK])
        stop = min(start + CHUNK, n)
        fiducial[start:stop] = np.asarray(d)[: stop - start]
        derivative[start:stop] = np.asarray(dd)[: stop - start]
    return fiducial, derivative


# ------------------------------------------------------------------ network
class PatchConv(nn.Module):
    """3×3, stride-2, 'SAME' convolution as patch extraction + matmul; parameters as ``nn.Conv``."""

    features: int

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        patches = jax.lax.conv_general_dilated_patches(
            x[None], (3, 3), (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )[0]  # (H/2, W/2, C·3·3), features ordered (C, kh, kw)
        return patches @ kernel.transpose(2, 0, 1, 3).reshape(-1, self.features) + bias


class CNN(nn.Module):
    """Conv(8) → leaky_relu → Conv(16) → leaky_relu → spatial mean → Dense(2), on ONE field (64, 64, 1)."""

    conv: str = "patches"

    @nn.compact
    def __call__(self, x):
        def convolution(features, name):
            if self.conv == "flax":
                return nn.Conv(features, (3, 3), strides=2, padding="SAME", name=name)
            return PatchConv(features, name=name)

        x = nn.leaky_relu(convolution(8, "conv_0")(x))
        x = nn.leaky_relu(convolution(16, "conv_1")(x))
        return nn.Dense(N_SUMMARIES, name="dense")(x.mean(axis=(0, 1)))


# --------------------------------------------------------- memory and time
def _status() -> dict[str, int]:
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":")
                values[name] = int(value.split()[0]) * 1024
    return values


def rss() -> int:
    """Resident set size now, bytes."""
    return _status()["VmRSS"]


def peak() -> int:
    """Peak resident set size since the last :func:`reset_peak`, bytes."""
    return _status()["VmHWM"]


def reset_peak() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM, and ru_maxrss with it) to the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def settle() -> int:
    gc.collect()
    time.sleep(0.2)
    return rss()


def live_jax_bytes() -> int:
    return sum(a.nbytes for a in jax.live_arrays())


# ------------------------------------------------------------------ workers
def _model(kind: str, n: int, n_per_device: int, conv: str, fiducial, derivative) -> imnn.IMNNBase:
    args = dict(
        n_s=n, n_d=n, n_params=N_PARAMS, n_summaries=N_SUMMARIES, input_shape=INPUT_SHAPE, θ_fid=θ_FID,
        model=CNN(conv), optimiser=optax.adam(LEARNING_RATE), key_or_state=jax.random.key(WEIGHTS_KEY),
        fiducial=fiducial, derivative=derivative, verbose=False,
    )  # fmt: skip
    if kind == "aggregated":
        return imnn.AggregatedGradientIMNN(
            **args, host=jax.devices()[0], devices=jax.devices(), n_per_device=n_per_device
        )
    return imnn.GradientIMNN(**args)


def _fit(model: imnn.IMNNBase, n: int) -> float:
    started = time.perf_counter()
    model.fit(λ=λ, ϵ=ϵ, patience=10**9, min_iterations=n, max_iterations=n)
    jax.block_until_ready((model.state, model.F))
    return time.perf_counter() - started


def _prepare_data(n: int) -> tuple[dict, jax.Array, jax.Array]:
    jnp.zeros(1).block_until_ready()  # start the backend before the baseline
    out = {"rss_imports": settle()}
    fiducial, derivative = generate(n)
    out["data"] = fiducial.nbytes + derivative.nbytes
    fiducial, derivative = jax.device_put(fiducial), jax.device_put(derivative)  # zero-copy on CPU
    jax.block_until_ready((fiducial, derivative))
    out["rss_data"] = settle()
    return out, fiducial, derivative


def fit_worker(cfg: dict) -> dict:
    """One class at one size: construction copies, fit working memory, seconds per iteration."""
    out, fiducial, derivative = _prepare_data(cfg["n"])
    reset_peak()
    model = _model(cfg["kind"], cfg["n"], cfg["n_per_device"], cfg["conv"], fiducial, derivative)
    jax.block_until_ready(getattr(model, "_data", None))  # the constructor's transfers are asynchronous
    out["construct"] = peak() - out["rss_data"]
    del fiducial, derivative
    out["rss_built"] = settle()
    out["held"] = live_jax_bytes()
    out["total"] = max(peak(), out["rss_data"])

    reset_peak()
    out["first_fit_s"] = _fit(model, 1)
    out["first_fit"] = peak() - out["rss_built"]
    out["fit_total"] = peak()

    reset_peak()
    k = cfg["iterations"]
    fit_s = _fit(model, k)
    started = time.perf_counter()
    model.set_F_statistics()
    jax.block_until_ready(model.F)
    out["statistics_s"] = time.perf_counter() - started
    out["steady"] = peak() - out["rss_built"]
    out["fit_total"] = max(out["fit_total"], peak())
    out["total"] = max(out["total"], out["fit_total"])
    out["s_per_it"] = (fit_s - out["statistics_s"]) / k
    out["detF"] = float(model.history["detF"][-1])
    out["load"] = os.getloadavg()[0]
    return out


def jacrev_loss_and_grad(source, executor, apply, n_per_device: int, n: int):
    """imnn's pass 1 and loss, then pass 2 as IMNN 0.3.2: full per-simulation Jacobians w.r.t. the weights."""
    batch_size = len(jax.devices()) * n_per_device

    def batched(cotangent):
        padding = -(-n // batch_size) * batch_size - n
        cotangent = jnp.concatenate([cotangent, jnp.zeros((padding, *cotangent.shape[1:]), cotangent.dtype)])
        return cotangent.reshape((-1, batch_size, *cotangent.shape[1:]))

    def gradient_of_one(w, item, x_cotangent, dx_cotangent):
        dx_dw, d2x_dwdθ = jax.jacrev(lambda w: source.with_derivative(apply, w, item))(w)
        # leaves: (n_summaries, *leaf) and (n_summaries, n_params, *leaf) — materialised
        return jax.tree.map(
            lambda a, b: jnp.einsum("i,i...->...", x_cotangent, a) + jnp.einsum("ij,ij...->...", dx_cotangent, b),
            dx_dw, d2x_dwdθ,
        )  # fmt: skip

    def loss_and_grad(w, data, key, λ, α):
        (with_batches, _) = data  # n_s == n_d: no simulations without derivatives
        x, dx_dθ = executor.summaries(w, data, key)
        (loss, metrics), (x_cotangent, dx_cotangent) = jax.value_and_grad(
            imnn.fisher.loss, argnums=(0, 1), has_aux=True
        )(x, dx_dθ, λ, α)

        def step(total, inputs):
            items, x_ct, dx_ct = inputs
            per_simulation = jax.vmap(gradient_of_one, (None, 0, 0, 0))(w, items, x_ct, dx_ct)
            return jax.tree.map(lambda t, g: t + g.sum(0), total, per_simulation), None

        total = jax.tree.map(jnp.zeros_like, w)
        total, _ = jax.lax.scan(step, total, (with_batches, batched(x_cotangent), batched(dx_cotangent)))
        return (loss, metrics), total

    return loss_and_grad


def pullback_worker(cfg: dict) -> dict:
    """One aggregated loss-and-gradient evaluation, pass 2 by jax.vjp (imnn) or by jacrev + einsum (0.3.2)."""
    n, n_per_device = cfg["n"], cfg["n_per_device"]
    out, fiducial, derivative = _prepare_data(n)
    network = CNN(cfg["conv"])
    apply = network.apply
    w = network.init(jax.random.key(WEIGHTS_KEY), jnp.zeros(INPUT_SHAPE))
    source = imnn.sources.gradient(n)
    executor = imnn.aggregation.aggregated(
        source, apply, devices=jax.devices(), n_per_device=n_per_device, n_s=n, n_d=n
    )
    data = executor.prepare((fiducial, derivative))
    del fiducial, derivative
    key = jax.random.key(0)
    settings = (jnp.float32(λ), jnp.float32(imnn.fisher.alpha(λ, ϵ)))
    if cfg["method"] == "vjp":
        loss_and_grad = jax.jit(executor.loss_and_grad)
    else:
        loss_and_grad = jax.jit(jacrev_loss_and_grad(source, executor, apply, n_per_device, n))
    out["rss_built"] = settle()

    reset_peak()
    started = time.perf_counter()
    jax.block_until_ready(loss_and_grad(w, data, key, *settings))
    out["first_s"] = time.perf_counter() - started
    out["first"] = peak() - out["rss_built"]
    reset_peak()
    times = []
    for _ in range(cfg["repeats"]):
        started = time.perf_counter()
        (loss, _), grads = jax.block_until_ready(loss_and_grad(w, data, key, *settings))
        times.append(time.perf_counter() - started)
    out["steady"] = peak() - out["rss_built"]
    out["s"] = float(np.median(times))
    out["total"] = peak()

    summaries = jax.jit(executor.summaries)
    jax.block_until_ready(summaries(w, data, key))
    started = time.perf_counter()
    jax.block_until_ready(summaries(w, data, key))
    out["pass1_s"] = time.perf_counter() - started
    if cfg["method"] != "vjp":  # same gradient as imnn's?
        reference = jax.jit(executor.loss_and_grad)(w, data, key, *settings)[1]
        out["grad_rel_diff"] = max(
            float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
            for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(reference))
        )
    out["loss"] = float(loss)
    out["load"] = os.getloadavg()[0]
    return out


WORKERS = {"fit": fit_worker, "pullback": pullback_worker}


def run_worker(cfg: dict) -> dict:
    """Run one configuration in a fresh Python process and return its measurements."""
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(cfg)],
        capture_output=True, text=True, env=os.environ.copy(),
    )  # fmt: skip
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (proc.stdout + proc.stderr)[-3000:]
    raise RuntimeError(f"worker {cfg} failed with exit code {proc.returncode}:\n{tail}")


# ---------------------------------------------------------------- reporting
def mib(b: float) -> str:
    return f"{b / MIB:8.0f}"


def gib(b: float) -> str:
    return f"{b / 2**30:6.2f}"


def fit_row(n: int, kind: str, r: dict | None, note: str = "") -> str:
    if r is None:
        return f"{n:8d} {'':>8s} {kind:11s} skipped: {note}"
    beyond = r["fit_total"] - r["rss_imports"] - r["data"]
    return (
        f"{n:8d} {mib(r['data'])} {kind:11s} {mib(r['construct'])} {r['construct'] / r['data']:5.1f}× "
        f"{mib(r['held'])} {mib(r['first_fit'])} {mib(r['steady'])} {mib(beyond)} {gib(r['total'])} "
        f"{r['s_per_it']:7.2f} {r['first_fit_s']:8.1f} {r['load']:5.2f}"
    )


FIT_HEADER = (
    f"{'n_s=n_d':>8s} {'data':>8s} {'class':11s} {'construct':>15s} {'held':>8s} {'1st fit':>8s} {'steady':>8s} "
    f"{'beyond':>8s} {'total':>6s} {'s/it':>7s} {'1st fit':>8s} {'load':>5s}\n"
    f"{'':>8s} {'MiB':>8s} {'':11s} {'MiB  × data':>15s} {'MiB':>8s} {'MiB':>8s} {'MiB':>8s} "
    f"{'MiB':>8s} {'GiB':>6s} {'':>7s} {'s':>8s} {'':>5s}"
)


def extrapolate(points: list[tuple[int, float]], n: int) -> float:
    """Linear extrapolation of (size, value) points to ``n`` (the last two points)."""
    if len(points) < 2:
        return points[-1][1] * n / points[-1][0] if points else 0.0
    (n1, v1), (n2, v2) = points[-2:]
    return v2 + (v2 - v1) / (n2 - n1) * (n - n2)


def check_conv_variants() -> float:
    """Largest difference between the flax.linen.Conv and the patch-matmul network with the same weights."""
    d = jnp.asarray(generate(2)[0])
    w = CNN("flax").init(jax.random.key(WEIGHTS_KEY), jnp.zeros(INPUT_SHAPE))
    outputs = [jax.vmap(CNN(conv).apply, (None, 0))(w, d) for conv in ("flax", "patches")]
    return float(jnp.max(jnp.abs(outputs[0] - outputs[1])) / jnp.max(jnp.abs(outputs[0])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    env = os.environ.get
    parser.add_argument(
        "--sizes",
        default=env("IMNN_BENCH_SIZES", "1000,2000,4000,8000"),
        help="comma-separated n_s = n_d (env IMNN_BENCH_SIZES, default 1000,2000,4000,8000)",
    )
    parser.add_argument(
        "--n-per-device",
        type=int,
        default=int(env("IMNN_BENCH_N_PER_DEVICE", 250)),
        help="n_per_device of the aggregated class (env IMNN_BENCH_N_PER_DEVICE, default 250)",
    )
    parser.add_argument(
        "-k",
        "--iterations",
        type=int,
        default=int(env("IMNN_BENCH_ITERATIONS", 2)),
        help="iterations of the timed fit (env IMNN_BENCH_ITERATIONS, default 2)",
    )
    parser.add_argument(
        "--conv",
        choices=("patches", "flax"),
        default=env("IMNN_BENCH_CONV", "patches"),
        help="how the network's convolutions are written (default patches; see the docstring)",
    )
    parser.add_argument(
        "--max-gib",
        type=float,
        default=float(env("IMNN_BENCH_MAX_GIB", 18)),
        help="skip in-memory sizes whose extrapolated peak RSS exceeds this (default 18)",
    )
    parser.add_argument(
        "--pullback-n",
        type=int,
        default=int(env("IMNN_BENCH_PULLBACK_N", 2000)),
        help="n_s of the vjp vs jacrev pull-back comparison; 0 skips it (default 2000)",
    )
    parser.add_argument("--pullback-repeats", type=int, default=3, help="timed evaluations per method (default 3)")
    parser.add_argument(
        "--largest", action="store_true", help="find and run the largest n_s whose aggregated fit fits in --budget-gib"
    )
    parser.add_argument("--largest-n", type=int, default=0, help="run the aggregated fit at this n_s instead")
    parser.add_argument(
        "--budget-gib",
        type=float,
        default=float(env("IMNN_BENCH_BUDGET_GIB", 18)),
        help="memory budget of --largest (default 18 GiB)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        cfg = json.loads(args.worker)
        print("RESULT " + json.dumps(WORKERS[cfg.pop("worker")](cfg)), flush=True)
        return

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    npd = args.n_per_device
    print(f"imnn {imnn.__version__}, jax {jax.__version__}, flax {flax.__version__}, "
          f"optax {optax.__version__}, python {platform.python_version()}")  # fmt: skip
    total_memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    print(f"devices: {len(jax.devices())} × {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"host CPUs: {os.cpu_count()}, memory {total_memory / 2**30:.1f} GiB")  # fmt: skip
    print(
        f"problem: 64×64 Gaussian random fields, θ_fid={θ_FID}; n_s=n_d; CNN conv({args.conv}) 8,16 → Dense(2); "
        f"adam({LEARNING_RATE}); λ={λ}, ϵ={ϵ}; aggregated n_per_device={npd} × {len(jax.devices())} device(s)"
    )
    print(f"data per simulation: {BYTES_PER_SIMULATION / 1024:.0f} KiB (fiducial 16 KiB + derivative 32 KiB)")
    print(f"patch-matmul vs flax.linen.Conv network, same weights: max relative difference {check_conv_variants():.1e}")
    print("load average (1, 5, 15 min) at start: {:.2f} {:.2f} {:.2f}\n".format(*os.getloadavg()))

    # ---- 1. the scan over n_s
    results: dict[tuple[int, str], dict | None] = {}
    in_memory_peaks: list[tuple[int, float]] = []
    if sizes:
        print(f"[peak memory and time per iteration; each row one fresh process; timed fit of {args.iterations} "
              "iteration(s)]")  # fmt: skip
        print(FIT_HEADER)
    for i, n in enumerate(sizes):
        for kind in ("in-memory", "aggregated") if i % 2 == 0 else ("aggregated", "in-memory"):
            if kind == "in-memory" and in_memory_peaks:
                predicted = extrapolate(in_memory_peaks, n)
                if predicted > args.max_gib * 2**30:
                    results[n, kind] = None
                    print(fit_row(n, kind, None, f"extrapolated peak {predicted / 2**30:.1f} GiB > --max-gib"))
                    continue
            cfg = dict(worker="fit", kind=kind, n=n, n_per_device=npd, conv=args.conv, iterations=args.iterations)
            results[n, kind] = r = run_worker(cfg)
            if kind == "in-memory":
                in_memory_peaks.append((n, r["total"]))
            print(fit_row(n, kind, r), flush=True)

    # ---- 2. pull-back: jax.vjp vs jacrev + einsum
    pullback = {}
    if args.pullback_n:
        print(f"\n[pull-back, n_s=n_d={args.pullback_n}, n_per_device={npd}: one loss-and-gradient evaluation]")
        for method in ("vjp", "jacrev"):
            cfg = dict(worker="pullback", method=method, n=args.pullback_n, n_per_device=npd, conv=args.conv,
                       repeats=args.pullback_repeats)  # fmt: skip
            pullback[method] = run_worker(cfg)
            p = pullback[method]
            print(f"  {method:7s} done: {p['s']:.2f} s/evaluation, working peak {p['steady'] / MIB:.0f} MiB "
                  f"(load {p['load']:.2f})", flush=True)  # fmt: skip

    # ---- 3. largest n_s
    largest = None
    if args.largest or args.largest_n:
        measured = [(n, r) for (n, kind), r in results.items() if kind == "aggregated" and r is not None]
        if args.largest_n:
            n_largest = args.largest_n
        else:
            if not measured:
                parser.error("--largest needs at least one size in --sizes to measure the overheads")
            measured.sort()
            _, r = measured[-1]
            if len(measured) >= 2:  # copies of the data made at construction: slope of its peak over data size
                _, r0 = measured[-2]
                copies = (r["construct"] - r0["construct"]) / (r["data"] - r0["data"])
            else:
                copies = r["construct"] / r["data"]
            overhead = max(0.0, r["construct"] - copies * r["data"])
            fixed = r["rss_imports"] + max(r["first_fit"], r["steady"], overhead)
            per_simulation = BYTES_PER_SIMULATION * (1 + copies)
            batch = npd * len(jax.devices())
            n_largest = int((args.budget_gib * 2**30 - fixed) / per_simulation) // batch * batch
            n_no_copy = int((args.budget_gib * 2**30 - fixed) / BYTES_PER_SIMULATION) // batch * batch
            print(f"\n[largest n_s in {args.budget_gib:g} GiB: fixed {fixed / 2**30:.2f} GiB (imports + working memory "
                  f"at n_per_device={npd}) + n_s × {BYTES_PER_SIMULATION / 1024:.0f} KiB × (the user's data + "
                  f"{copies:.2f} constructor copies) → n_s = {n_largest}; without the constructor's copies "
                  f"it would be {n_no_copy}]")  # fmt: skip
        print(f"running the aggregated fit at n_s = n_d = {n_largest} "
              f"(data {n_largest * BYTES_PER_SIMULATION / 2**30:.2f} GiB) ...", flush=True)  # fmt: skip
        cfg = dict(worker="fit", kind="aggregated", n=n_largest, n_per_device=npd, conv=args.conv, iterations=1)
        largest = run_worker(cfg)

    # ---- 4. tables
    width = 118
    print("\n" + "=" * width)
    if sizes:
        print("data: fiducial + derivative arrays;  construct: peak RSS during the constructor above the RSS before "
              "it (× data: copies made);")  # fmt: skip
        print("held: bytes of live jax arrays after construction (user's arrays deleted);  1st fit / steady: peak RSS "
              "above the RSS after")  # fmt: skip
        print("construction during the first fit (compile + 1 iteration) / the timed fits;  beyond: largest RSS "
              "while fitting − RSS")  # fmt: skip
        print("after imports − data (all but the data: compiler, runtime, activations);  total: largest RSS, "
              "construction included;")  # fmt: skip
        print("s/it: (T(fit(k)) − T(set_F_statistics)) / k")
        print("-" * width)
        print(FIT_HEADER)
        print("-" * width)
        for n in sizes:
            for kind in ("in-memory", "aggregated"):
                print(fit_row(n, kind, results.get((n, kind)), "extrapolated peak above --max-gib"))
        print("-" * width)
        print(f"{'n_s':>8s} {'beyond MiB: in-memory':>22s} {'aggregated':>11s} {'steady MiB: in-memory':>22s} "
              f"{'aggregated':>11s} {'s/it aggregated / in-memory':>28s}")  # fmt: skip
        for n in sizes:
            a, m = results.get((n, "aggregated")), results.get((n, "in-memory"))
            ratio = f"{a['s_per_it'] / m['s_per_it']:.2f}" if a and m else "—"

            def beyond(r):
                return mib(r["fit_total"] - r["rss_imports"] - r["data"]) if r else "—"

            print(f"{n:8d} {beyond(m):>22s} {beyond(a):>11s} {mib(m['steady']) if m else '—':>22s} "
                  f"{mib(a['steady']) if a else '—':>11s} {ratio:>28s}")  # fmt: skip
        for kind in ("in-memory", "aggregated"):
            pts = [(n, results[n, kind]) for n in sizes if results.get((n, kind))]
            if len(pts) >= 2:
                (n1, r1), (n2, r2) = pts[0], pts[-1]
                slope = (r2["steady"] - r1["steady"]) / (n2 - n1) * 1000 / MIB
                per_it = (r2["s_per_it"] - r1["s_per_it"]) / (n2 - n1) * 1000
                print(f"  {kind:10s}: steady working memory grows {slope:7.1f} MiB per 1000 simulations "
                      f"({n1}→{n2}); time grows {per_it:.3f} s per 1000 simulations per iteration")  # fmt: skip
        print("-" * width)
    if pullback:
        v, j = pullback["vjp"], pullback["jacrev"]
        print(f"pull-back (pass 2), n_s=n_d={args.pullback_n}, n_per_device={npd}: full loss-and-gradient evaluation")
        print(f"{'method':34s} {'s/eval':>8s} {'pass 2 s':>9s} {'working MiB':>12s} {'1st call MiB':>13s} "
              f"{'compile+run s':>14s} {'load':>5s}")  # fmt: skip
        for name, p in (("imnn: jax.vjp per batch", v), ("0.3.2: jacrev + einsum per sim.", j)):
            print(f"{name:34s} {p['s']:8.2f} {p['s'] - p['pass1_s']:9.2f} {p['steady'] / MIB:12.0f} "
                  f"{p['first'] / MIB:13.0f} {p['first_s']:14.1f} {p['load']:5.2f}")  # fmt: skip
        print(
            f"ratio jacrev / vjp: time {j['s'] / v['s']:.2f}× (pass 2 alone "
            f"{(j['s'] - j['pass1_s']) / (v['s'] - v['pass1_s']):.2f}×), working memory "
            f"{j['steady'] / max(v['steady'], 1):.2f}×; gradients agree to {j['grad_rel_diff']:.1e} (relative)"
        )
        print("-" * width)
    if largest:
        r = largest
        print(f"largest run: aggregated, n_s = n_d = {n_largest}, n_per_device={npd}: "
              f"data {r['data'] / 2**30:.2f} GiB, constructor copies {r['construct'] / r['data']:.2f}×, "
              f"peak RSS {r['total'] / 2**30:.2f} GiB (budget {args.budget_gib:g}); "
              f"{r['s_per_it']:.1f} s/iteration, first fit {r['first_fit_s']:.0f} s, statistics pass "
              f"{r['statistics_s']:.1f} s, |F| {r['detF']:.3g}")  # fmt: skip
        print("-" * width)
    print("load average (1, 5, 15 min) at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print("=" * width)


if __name__ == "__main__":
    sys.exit(main())
