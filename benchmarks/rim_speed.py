"""How fast does ``imnn.rim.RIM`` train and predict, beside a hand-written JAX loop and torch_rim?

Problems (both trained on one fixed data set of arrays, the same arrays for every implementation):

(a) ``hourglass``: deconvolution of 32×32 fields. x is a smooth Gaussian random field (white noise
    through a Gaussian filter of 2 pixels, unit variance), y = B x + σ ε with B a periodic Gaussian
    blur of 1.5 pixels (FFT) and σ ~ U(0.2, 0.5) per instance; ``score_fn(x, y, σ) = B(y − Bx)/σ²``.
    Network :class:`imnn.rim.Hourglass` (channels = 1, nf = 16, ch_mult = (2, 2), hidden_units = 32,
    num_layers = 2, 3×3 kernels), T = 5, batch 8, adam(1e-4), 256 instances.
(b) ``mlp``: the linear-Gaussian vector problem of ``tests/test_rim.py`` (x ∈ R¹⁶ with a squared-
    exponential prior, y = A x + σ ε ∈ R⁸, A and σ per instance); :class:`imnn.rim.MLP` with 128
    hidden units, T = 10, batch 128, adam(3e-3), 4096 instances.

Measured in one run, for each problem:

1. ms per training step of ``rim.fit(dataset, epochs=1, n_iterations_in_epoch=N, batch_size=…,
   progress=False)`` once compiled (the first fit is timed separately: it compiles, and on a CPU
   the fit engine measures its dispatch modes there). The whole call is timed; the slope
   ``(T(N) − T(n_short)) / (N − n_short)`` removes the fixed per-call cost, which is printed too.
2. the same for hand-written ``jax.jit`` training loops of the same maths: the flax module's
   ``apply``, but the RIM recurrence (``stop_gradient`` score, ``z ← z + Δ``), the loss
   ``mean_batch Σₜ ‖zₜ − x‖²``, the batch draw (distinct instances, ``jax.random.choice``) and the
   Adam update written here (no imnn function is called by them), in two forms:
   ``hand-written`` — the recurrence as a ``lax.scan`` over T (as imnn's) and the steps as one
   ``lax.fori_loop``; ``hand, T unrolled`` — the recurrence unrolled (``scan(unroll=True)``) and
   one jitted step per iteration called from Python (XLA:CPU compiles the kernel gradient of a
   convolution inside any loop, a scan as well as a while_loop, far worse than outside one);
   ``--grid`` adds the other two combinations (scan with a jitted step, unrolled in a fori_loop).
3. the same for torch_rim 0.2.9 (PyTorch, its ``RIM.fit`` on a ``TensorDataset``: forward, backward,
   Adam step and its DataLoader), with the matching torch_rim ``Hourglass`` (same hyper-parameters;
   NCHW) or, as torch_rim ships no vector network, a torch module of the same MLP (Linear → tanh →
   ``GRUCell`` → Linear); same T, batch, learning rate and data. Skipped, with the install command,
   when ``torch`` or ``torch_rim`` does not import.
4. predictions per second of ``rim.predict`` on a batch (and the latency of one instance) beside the
   hand-written jitted predictions and torch_rim's ``predict`` under ``torch.no_grad()``.

Ratios: imnn / hand-written (goal ≤ 1.1), imnn / hand-written with T unrolled, torch_rim / imnn
(goal > 1: imnn faster). Timed runs are interleaved in ABBA order (imnn beside the hand-written
loop), and ratios are medians of per-repeat ratios, so that background load does not bias them.

Run (torch_rim part needs torch and torch_rim in the same environment as imnn, e.g.
``pip install torch --index-url https://download.pytorch.org/whl/cpu torch_rim==0.2.9``):
      nice python benchmarks/rim_speed.py            (~2 min on 2 CPU cores with torch_rim, ~1.5 min without)
      nice python benchmarks/rim_speed.py --problems mlp -r 8
      nice python benchmarks/rim_speed.py --problems hourglass --grid
      nice python benchmarks/rim_speed.py --nf 32 --hg-T 10 --hg-batch 16 -r 6   (torch_rim's nf default)
      IMNN_BENCH_REPEATS=6 IMNN_BENCH_RIM_NF=32 nice python benchmarks/rim_speed.py --no-torch
Every option has an environment variable: IMNN_BENCH_REPEATS for ``-r``, IMNN_BENCH_RIM_<OPTION> for
the others (``--hg-batch`` → IMNN_BENCH_RIM_HG_BATCH).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import io
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from _shared import CompileCounter

import imnn
from imnn.rim import MLP, RIM, Hourglass

WEIGHTS_KEY, FIT_KEY, DATA_SEED = 0, 1, 2
β1, β2, ADAM_EPS = 0.9, 0.999, 1e-8  # optax.adam's defaults, which RIM.fit uses
TORCH_INSTALL = "pip install torch --index-url https://download.pytorch.org/whl/cpu torch_rim==0.2.9"
VARIANTS = {  # key: label
    "imnn": "imnn fit",
    "hand": "hand-written",
    "unrolled": "hand, T unrolled",
    "scan_step": "hand, scan, jit step",  # --grid: the other two combinations
    "unrolled_loop": "hand, unrolled, fori",
    "torch": "torch_rim fit",
}


# ------------------------------------------------------------------ problems
class Problem:
    """One benchmark problem: the imnn RIM, its data (channels-last) and how to build torch_rim's."""

    def __init__(self, name: str, description: str, dimensions: tuple[int, ...], network: Any, score_fn: Callable,
                 data: tuple[np.ndarray, ...], T: int, batch_size: int, learning_rate: float, n_predict: int,
                 torch_build: Callable):  # fmt: skip
        self.name, self.description, self.dimensions, self.network = name, description, dimensions, network
        self.score_fn, self.data, self.T, self.batch_size = score_fn, data, T, batch_size
        self.learning_rate, self.n_predict, self.torch_build = learning_rate, n_predict, torch_build
        self.x_shape = data[1].shape[1:]

    def rim(self) -> RIM:
        return RIM(self.dimensions, self.network, score_fn=self.score_fn, T=self.T, key=jax.random.key(WEIGHTS_KEY))


def gaussian_filter(size: int, width: float) -> np.ndarray:
    """Fourier transfer function of a periodic Gaussian filter of ``width`` pixels on a size² grid."""
    k = 2 * np.pi * np.fft.fftfreq(size)
    return np.exp(-0.5 * (k[:, None] ** 2 + k[None] ** 2) * width**2).astype(np.float32)


def hourglass_problem(args: argparse.Namespace) -> Problem:
    size, n_data = args.size, args.hg_data
    prior, psf = gaussian_filter(size, 2.0), gaussian_filter(size, 1.5)
    rng = np.random.default_rng(DATA_SEED)

    def filtered(a, transfer):  # float(n, size, size)
        return np.fft.ifft2(np.fft.fft2(a) * transfer).real

    x = filtered(rng.normal(size=(n_data, size, size)), prior)
    x /= x.std()
    σ = rng.uniform(0.2, 0.5, n_data)
    y = filtered(x, psf) + σ[:, None, None] * rng.normal(size=x.shape)
    data = tuple(a.astype(np.float32) for a in (y[..., None], x[..., None], σ))
    blur_kernel = jnp.asarray(psf)

    def blur(field):  # float(size, size, 1), one instance
        return jnp.fft.ifft2(jnp.fft.fft2(field[..., 0]) * blur_kernel).real[..., None]

    def score_fn(x, y, σ):
        return blur(y - blur(x)) / σ**2

    network = Hourglass(1, dimensions=2, nf=args.nf, ch_mult=(2, 2), hidden_units=32, num_layers=2, kernel_size=3)

    def torch_build(torch, torch_rim):
        transfer = torch.from_numpy(psf)

        def torch_blur(field):  # float(batch, 1, size, size)
            return torch.fft.ifft2(torch.fft.fft2(field) * transfer).real

        def torch_score(x, y, σ):
            return torch_blur(y - torch_blur(x)) / σ[:, None, None, None] ** 2

        model = torch_rim.Hourglass(1, dimensions=2, nf=args.nf, ch_mult=(2, 2), hidden_units=32, num_layers=2,
                                    kernel_size=3)  # fmt: skip
        y, x, σ = (torch.from_numpy(np.ascontiguousarray(a)) for a in data)
        return model, torch_score, (y.permute(0, 3, 1, 2).contiguous(), x.permute(0, 3, 1, 2).contiguous(), σ)

    description = (
        f"{size}×{size} deconvolution (blur 1.5 px, σ∈[0.2,0.5]); Hourglass(channels=1, nf={args.nf}, ch_mult=(2,2), "
        f"hidden_units=32, num_layers=2, 3×3); T={args.hg_T}; batch {args.hg_batch}; adam(1e-4); {n_data} instances"
    )
    return Problem("hourglass", description, (size, size), network, score_fn, data, args.hg_T, args.hg_batch, 1e-4,
                   args.hg_predict, torch_build)  # fmt: skip


def mlp_problem(args: argparse.Namespace) -> Problem:
    n, m, n_data = 16, 8, args.mlp_data
    index = np.arange(n)
    prior_cov = np.exp(-0.5 * (index[:, None] - index[None]) ** 2 / 3.0**2) + 1e-4 * np.eye(n)
    rng = np.random.default_rng(DATA_SEED)
    x = rng.normal(size=(n_data, n)) @ np.linalg.cholesky(prior_cov).T
    A = rng.normal(size=(n_data, m, n)) / np.sqrt(n)
    σ = rng.uniform(0.2, 0.5, n_data)
    y = np.einsum("bmn,bn->bm", A, x) + σ[:, None] * rng.normal(size=(n_data, m))
    data = tuple(a.astype(np.float32) for a in (y, x, A, σ))

    def score_fn(x, y, A, σ):
        return A.T @ (y - A @ x) / σ**2

    hidden = args.mlp_hidden

    def torch_build(torch, torch_rim):
        nn = torch.nn

        class TorchMLP(nn.Module):
            """imnn.rim.MLP in torch: Linear → tanh → GRUCell → Linear (torch_rim has no vector network)."""

            def __init__(self):
                super().__init__()
                self.channels, self.hyperparameters = n, {"architecture": "mlp", "hidden_units": hidden}
                self.input = nn.Linear(2 * n, hidden)
                self.gru = nn.GRUCell(hidden, hidden)
                self.output = nn.Linear(hidden, n)

            def forward(self, x, y, score, h):
                h = self.gru(torch.tanh(self.input(torch.cat([x, score], -1))), h)
                return self.output(h), h

            def initalize_hidden_states(self, dimensions, batch_size):  # torch_rim's spelling
                return torch.zeros(batch_size, hidden)

        def torch_score(x, y, A, σ):
            residual = y - torch.einsum("bmn,bn->bm", A, x)
            return torch.einsum("bmn,bm->bn", A, residual) / σ[:, None] ** 2

        return TorchMLP(), torch_score, tuple(torch.from_numpy(a) for a in data)

    description = (
        f"linear Gaussian, x∈R^{n}, y∈R^{m}, A and σ per instance; MLP(hidden_units={hidden}); T={args.mlp_T}; "
        f"batch {args.mlp_batch}; adam(3e-3); {n_data} instances"
    )
    return Problem("mlp", description, (), MLP(n, hidden_units=hidden), score_fn, data, args.mlp_T, args.mlp_batch,
                   3e-3, args.mlp_predict, torch_build)  # fmt: skip


# ------------------------------------------------------------------ imnn
class Imnn:
    """``rim.fit`` and ``rim.predict``; repeated fits continue the optimiser (same setting)."""

    def __init__(self, problem: Problem, device_data: tuple):
        self.problem, self.rim, self.data = problem, problem.rim(), device_data

    def fit(self, n: int) -> float:
        p = self.problem
        started = time.perf_counter()
        losses = self.rim.fit(self.data, epochs=1, n_iterations_in_epoch=n, batch_size=p.batch_size,
                              learning_rate=p.learning_rate, progress=False)  # fmt: skip
        jax.block_until_ready(self.rim.params)
        elapsed = time.perf_counter() - started
        if not np.all(np.isfinite(losses)):
            raise RuntimeError(f"imnn fit on {p.name} diverged: {losses}")
        return elapsed

    def predict(self, y, args) -> float:
        started = time.perf_counter()
        jax.block_until_ready(self.rim.predict(y, *args))
        return time.perf_counter() - started

    def dispatch(self) -> str:
        """How the fit engine dispatches iterations (private attributes: best effort)."""
        try:
            return "; ".join(chunk.describe() or "measuring" for chunk, *_ in self.rim._fits.values())
        except (AttributeError, TypeError, ValueError):
            return "n/a"


# ---------------------------------------------------------- hand-written JAX
class HandWritten:
    """A RIM training loop written here with jax, optax-free: only the flax module's ``apply`` is shared.

    ``unrolled``: the T steps unrolled (``scan(unroll=True)``), else a ``lax.scan``; ``per_step``:
    one jitted training step per iteration called from Python, else one jitted ``lax.fori_loop``.
    """

    def __init__(self, problem: Problem, params: Any, device_data: tuple, unrolled: bool, per_step: bool):
        apply, T, score_fn, lr = problem.network.apply, problem.T, problem.score_fn, problem.learning_rate
        h0 = problem.network.initialize_hidden_states(problem.dimensions)
        x_shape, batch_size, n_data = problem.x_shape, problem.batch_size, problem.data[0].shape[0]
        self.data, self.per_step = device_data, per_step

        def forward(w, y, *args):  # one instance → float(T, *x_shape)
            def step(carry, _):
                z, h = carry
                score = jax.lax.stop_gradient(score_fn(z, y, *args))
                Δ, h = apply(w, z, y, score, h)
                return (z + Δ, h), z + Δ

            return jax.lax.scan(step, (jnp.zeros(x_shape), h0), None, length=T, unroll=True if unrolled else 1)[1]

        def loss(w, y, x, args):
            zs = jax.vmap(lambda y, a: forward(w, y, *a))(y, args)  # float(batch, T, *x_shape)
            return jnp.mean(jnp.sum((zs - x[:, None]) ** 2, axis=tuple(range(1, zs.ndim))))

        def train_step(state, data):
            w, m, v, count, key, _ = state
            key, subkey = jax.random.split(key)
            index = jax.random.choice(subkey, n_data, (batch_size,), replace=False)
            y, x, *args = (a[index] for a in data)
            value, grads = jax.value_and_grad(loss)(w, y, x, tuple(args))
            count = count + 1
            m = jax.tree.map(lambda m, g: β1 * m + (1 - β1) * g, m, grads)
            v = jax.tree.map(lambda v, g: β2 * v + (1 - β2) * g * g, v, grads)
            c1, c2 = 1 - β1**count, 1 - β2**count
            w = jax.tree.map(lambda w, m, v: w - lr * (m / c1) / (jnp.sqrt(v / c2) + ADAM_EPS), w, m, v)
            return w, m, v, count, key, value

        self.loss = jax.jit(loss)
        if per_step:
            self.step = jax.jit(train_step)
        else:
            self.loop = jax.jit(lambda state, n, data: jax.lax.fori_loop(0, n, lambda _, s: train_step(s, data), state))
        self.predict_fn = jax.jit(lambda w, y, args: jax.vmap(lambda y, a: forward(w, y, *a)[-1])(y, args))
        zeros = jax.tree.map(jnp.zeros_like, params)
        self.state = (params, zeros, zeros, jnp.float32(0), jax.random.key(FIT_KEY), jnp.float32(0))

    def fit(self, n: int) -> float:
        started = time.perf_counter()
        if self.per_step:
            state = self.state
            for _ in range(n):
                state = self.step(state, self.data)
        else:
            state = self.loop(self.state, jnp.int32(n), self.data)
        jax.block_until_ready(state)
        elapsed = time.perf_counter() - started
        self.state = state
        if not np.isfinite(float(state[-1])):
            raise RuntimeError("hand-written loop diverged")
        return elapsed

    def predict(self, y, args) -> float:
        started = time.perf_counter()
        jax.block_until_ready(self.predict_fn(self.state[0], y, args))
        return time.perf_counter() - started


# ------------------------------------------------------------------ torch_rim
def import_torch_rim() -> tuple[Any, Any, str]:
    """``(torch, torch_rim module, note)``; ``(None, None, why)`` when either does not import.

    torch_rim's distribution installs a top-level package named ``rim``, not ``torch_rim``."""
    try:
        torch = importlib.import_module("torch")
    except ImportError as error:
        return None, None, f"torch does not import ({error})"
    try:
        version = importlib.metadata.version("torch_rim")
    except importlib.metadata.PackageNotFoundError:
        return None, None, "torch_rim is not installed"
    for name in ("torch_rim", "rim"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "RIM") and hasattr(module, "Hourglass"):
            return torch, module, f"torch {torch.__version__}, torch_rim {version} (imported as `{name}`)"
    return None, None, f"torch_rim {version} is installed but neither `torch_rim` nor `rim` imports its RIM"


class TorchRim:
    """torch_rim's ``RIM.fit`` (a fresh Adam each call, like every torch_rim fit) and ``predict``."""

    def __init__(self, torch, torch_rim, problem: Problem):
        torch.manual_seed(WEIGHTS_KEY)
        self.torch, self.problem = torch, problem
        model, score, tensors = problem.torch_build(torch, torch_rim)
        self.rim = torch_rim.RIM(problem.dimensions, model, score_fn=score, T=problem.T, device=torch.device("cpu"))
        self.dataset = torch.utils.data.TensorDataset(*tensors)
        self.tensors = tensors
        self.n_params = sum(p.numel() for p in model.parameters())

    def fit(self, n: int) -> float:
        p = self.problem
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # tqdm, prints
            losses = self.rim.fit(self.dataset, epochs=1, n_iterations_in_epoch=n, batch_size=p.batch_size,
                                  learning_rate=p.learning_rate, shuffle=True)  # fmt: skip
        elapsed = time.perf_counter() - started
        if not np.all(np.isfinite(losses)):
            raise RuntimeError(f"torch_rim fit on {p.name} diverged: {losses}")
        return elapsed

    def predict(self, y, args) -> float:
        started = time.perf_counter()
        with self.torch.no_grad():
            self.rim.predict(y, *args)
        return time.perf_counter() - started


# ------------------------------------------------------------------ timing
def abba(names: list[str], repeats: int, run: Callable[[str], None], show: Callable[[int], str] | None = None) -> None:
    """Call ``run(name)`` for every name, ``repeats`` times, in ABBA order."""
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            run(name)
        if show is not None:
            print(f"  repeat {repeat + 1}: {show(repeat)}")


def paired(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Quartiles of the per-repeat ratios a/b."""
    q1, q2, q3 = np.percentile([x / y for x, y in zip(a, b)], [25, 50, 75])
    return float(q1), float(q2), float(q3)


def ratio_text(quartiles: tuple[float, float, float]) -> str:
    return f"{quartiles[1]:7.3f}  (interquartile {quartiles[0]:.3f}–{quartiles[2]:.3f})"


def stats(values: list[float]) -> str:
    return f"min {min(values):9.2f}  median {statistics.median(values):9.2f}"


def benchmark(problem: Problem, args: argparse.Namespace, torch_parts: tuple, counter: CompileCounter) -> dict:
    n, short = getattr(args, f"{problem.name}_iterations"), getattr(args, f"{problem.name}_short")
    first_n = max(2, short)  # the engine times its dispatch modes on a first fit's first iterations
    print(f"\n{'#' * 100}\n[{problem.name}] {problem.description}")
    print(f"timed fits: {n} steps and {short} steps (for the slope) × {args.repeats} repeats per variant")
    device_data = tuple(jnp.asarray(a) for a in problem.data)
    P = problem.n_predict
    predict_y = device_data[0][:P]
    predict_args = tuple(a[:P] for a in device_data[2:])
    one_y, one_args = device_data[0][:1], tuple(a[:1] for a in device_data[2:])

    imnn_rim = Imnn(problem, device_data)
    imnn_rim.rim.predict(one_y, *one_args)  # initialises the weights, which the hand-written loops start from
    params = imnn_rim.rim.params
    variants: dict[str, Any] = {
        "imnn": imnn_rim,
        "hand": HandWritten(problem, params, device_data, unrolled=False, per_step=False),
        "unrolled": HandWritten(problem, params, device_data, unrolled=True, per_step=True),
    }
    if args.grid:
        variants["scan_step"] = HandWritten(problem, params, device_data, unrolled=False, per_step=True)
        variants["unrolled_loop"] = HandWritten(problem, params, device_data, unrolled=True, per_step=False)
    hand_names = [k for k in variants if k != "imnn"]
    n_weights = sum(a.size for a in jax.tree.leaves(params))
    torch, torch_rim, _ = torch_parts
    if torch is not None:
        variants["torch"] = TorchRim(torch, torch_rim, problem)
        torch_y = variants["torch"].tensors[0][:P]
        torch_args = tuple(t[:P] for t in variants["torch"].tensors[2:])
        torch_one = (variants["torch"].tensors[0][:1], tuple(t[:1] for t in variants["torch"].tensors[2:]))
        print(f"weights: imnn {n_weights}, torch_rim {variants['torch'].n_params} "
              f"(torch threads {torch.get_num_threads()})")  # fmt: skip
    else:
        print(f"weights: imnn {n_weights}")

    # same maths: the hand-written loss equals RIM.loss_fn at the same weights on the same batch
    batch = tuple(a[: problem.batch_size] for a in device_data)
    imnn_loss = float(imnn_rim.rim.loss_fn(*batch))
    hand_losses = [float(variants[k].loss(params, batch[0], batch[1], batch[2:])) for k in ("hand", "unrolled")]
    print(f"check (same maths): loss at the initial weights, first batch: imnn {imnn_loss:.6g}, hand-written "
          f"{hand_losses[0]:.6g}, T unrolled {hand_losses[1]:.6g}")  # fmt: skip

    # ---- first calls: compilation
    print("[first fit calls, compilation included]")
    first: dict[str, float] = {}
    for name, variant in variants.items():
        with counter.counting() as compiled:
            first[name] = variant.fit(first_n)
        extra = f", engine: {imnn_rim.dispatch()}" if name == "imnn" else ""
        print(f"  {VARIANTS[name]:20s} fit({first_n}): {first[name]:7.2f} s, {len(compiled)} XLA compilations{extra}")
    for name, variant in variants.items():  # compile the predictions (and the short fits of the hand-written)
        variant.predict(predict_y if name != "torch" else torch_y, predict_args if name != "torch" else torch_args)
        variant.predict(*(torch_one if name == "torch" else (one_y, one_args)))
    for name in hand_names:
        variants[name].fit(short)

    # ---- timed fits
    print(f"[timed fits: ms per step of {n}-step calls]")
    names = ["hand", "imnn"] + hand_names[1:] + (["torch"] if "torch" in variants else [])
    times: dict[str, list[float]] = {name: [] for name in names}
    short_times: dict[str, list[float]] = {name: [] for name in names}
    compiles = dict.fromkeys(names, 0)

    def run_fits(name: str) -> None:
        with counter.counting() as compiled:
            short_times[name].append(variants[name].fit(short))
            times[name].append(variants[name].fit(n))
        compiles[name] += len(compiled) if name != "torch" else 0

    abba(names, args.repeats, run_fits,
         lambda r: "   ".join(f"{VARIANTS[k]} {1e3 * times[k][r] / n:8.2f}" for k in names))  # fmt: skip
    per_step = {k: [1e3 * t / n for t in times[k]] for k in names}
    slope = {k: [1e3 * (t - s) / (n - short) for t, s in zip(times[k], short_times[k])] for k in names}
    fixed = {k: 1e3 * statistics.median(short_times[k]) - short * statistics.median(slope[k]) for k in names}

    # ---- timed predictions
    print(f"[timed predictions: batch of {P}, and one instance]")
    batch_times: dict[str, list[float]] = {name: [] for name in names}
    one_times: dict[str, list[float]] = {name: [] for name in names}

    def run_predictions(name: str) -> None:
        if name == "torch":
            batch_times[name].append(variants[name].predict(torch_y, torch_args))
            one_times[name].append(variants[name].predict(*torch_one))
        else:
            batch_times[name].append(variants[name].predict(predict_y, predict_args))
            one_times[name].append(variants[name].predict(one_y, one_args))

    abba(names, max(args.repeats, 4), run_predictions)

    # ---- table
    width = 104
    print("=" * width)
    print(f"[{problem.name}]  {'ms/step (wall/N)':>26s}  {'ms/step (slope)':>26s}  {'steps/s':>8s}  "
          f"{'fixed/call':>10s}  {'predictions/s':>13s}  {'1 instance':>10s}")  # fmt: skip
    results = {"ratios": {}, "steps_per_s": {}, "predictions_per_s": {}}
    for k in names:
        steps_per_s = 1e3 / statistics.median(slope[k])
        predictions_per_s = P / statistics.median(batch_times[k])
        results["steps_per_s"][k], results["predictions_per_s"][k] = steps_per_s, predictions_per_s
        latency = 1e3 * statistics.median(one_times[k])
        print(f"{VARIANTS[k]:20s} {stats(per_step[k]):>26s}  {stats(slope[k]):>26s}  {steps_per_s:8.2f}  "
              f"{fixed[k]:7.0f} ms  {predictions_per_s:13.0f}  {latency:7.2f} ms")  # fmt: skip
    print("-" * width)
    lines = [("imnn / hand-written", "imnn", "hand", "goal ≤ 1.1"), ("imnn / hand, T unrolled", "imnn", "unrolled", "")]
    lines += [(f"imnn / {VARIANTS[k]}", "imnn", k, "") for k in hand_names[2:]]
    if "torch" in names:
        lines += [("torch_rim / imnn", "torch", "imnn", "goal > 1 (imnn faster)"),
                  ("torch_rim / hand, T unrolled", "torch", "unrolled", "")]  # fmt: skip
    print(f"{'ratios of ms/step (median of per-repeat ratios)':48s} {'slope':>8s} {'wall/N':>8s}   "
          f"{'predict ' + str(P):>12s}")  # fmt: skip
    for label, a, b, goal in lines:
        q = paired(slope[a], slope[b])
        wall = paired(per_step[a], per_step[b])[1]
        predict_ratio = paired(batch_times[a], batch_times[b])[1]
        results["ratios"][label] = (q[1], predict_ratio)
        print(f"  {label:46s} {q[1]:8.3f} {wall:8.3f}   {predict_ratio:12.3f}   "
              f"(slope interquartile {q[0]:.3f}–{q[2]:.3f}) {goal}")  # fmt: skip
    print("-" * width)
    print("first fit (compiles): " + ", ".join(f"{VARIANTS[k]} {first[k]:.1f} s" for k in names)
          + ";  XLA compilations during the timed fits: " + ", ".join(f"{VARIANTS[k]} {compiles[k]}"
                                                                       for k in names if k != "torch"))  # fmt: skip
    print(f"imnn fit engine: {imnn_rim.dispatch()}")
    print("=" * width)
    return results


def option(parser: argparse.ArgumentParser, flag: str, default: Any, help: str, kind: type = int) -> None:
    env = "IMNN_BENCH_RIM_" + flag.lstrip("-").upper().replace("-", "_")
    value = kind(os.environ[env]) if env in os.environ else default
    parser.add_argument(flag, type=kind, default=value, help=f"{help} (env {env}, default {default})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-r", "--repeats", type=int, default=int(os.environ.get("IMNN_BENCH_REPEATS", 4)),
                        help="timed runs of each variant, interleaved (env IMNN_BENCH_REPEATS, default 4)")  # fmt: skip
    option(parser, "--problems", "hourglass,mlp", "comma-separated: hourglass, mlp", str)
    option(parser, "--size", 32, "hourglass: field side")
    option(parser, "--nf", 16, "hourglass: base width nf (torch_rim's default is 32)")
    option(parser, "--hg-T", 5, "hourglass: RIM steps T")
    option(parser, "--hg-batch", 8, "hourglass: batch size")
    option(parser, "--hg-data", 256, "hourglass: instances in the data set")
    option(parser, "--hg-iterations", 4, "hourglass: training steps per timed fit")
    option(parser, "--hg-short", 1, "hourglass: steps of the short fit (slope)")
    option(parser, "--hg-predict", 64, "hourglass: instances per timed prediction")
    option(parser, "--mlp-hidden", 128, "mlp: hidden units")
    option(parser, "--mlp-T", 10, "mlp: RIM steps T")
    option(parser, "--mlp-batch", 128, "mlp: batch size")
    option(parser, "--mlp-data", 4096, "mlp: instances in the data set")
    option(parser, "--mlp-iterations", 100, "mlp: training steps per timed fit")
    option(parser, "--mlp-short", 10, "mlp: steps of the short fit (slope)")
    option(parser, "--mlp-predict", 1024, "mlp: instances per timed prediction")
    parser.add_argument("--no-torch", action="store_true", help="skip torch_rim even where it imports")
    parser.add_argument("--grid", action="store_true",
                        help=("also time the hand-written loop as a scan with a jitted step, and unrolled in a "
                              "fori_loop"))  # fmt: skip
    args = parser.parse_args()
    args.hourglass_iterations, args.hourglass_short = args.hg_iterations, args.hg_short
    problems = [p.strip() for p in args.problems.split(",") if p.strip()]
    unknown = set(problems) - {"hourglass", "mlp"}
    if unknown or not problems:
        parser.error(f"--problems: unknown {sorted(unknown)}; choose from hourglass, mlp")
    for name in problems:
        if getattr(args, f"{name}_iterations") <= getattr(args, f"{name}_short"):
            parser.error(f"{name}: the timed fits' steps must exceed the short fit's")

    print(f"imnn {imnn.__version__}, jax {jax.__version__}, python {platform.python_version()}")
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), host CPUs: {os.cpu_count()}")
    torch_parts = (None, None, "skipped (--no-torch)") if args.no_torch else import_torch_rim()
    if torch_parts[0] is None:
        print(f"torch_rim: {torch_parts[2]}: its comparison is skipped. Install with\n    {TORCH_INSTALL}")
    else:
        print(torch_parts[2])
    print("load average (1, 5, 15 min) at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    counter = CompileCounter()
    build = {"hourglass": hourglass_problem, "mlp": mlp_problem}
    results = {}
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=UserWarning, module=r"imnn\.")  # e.g. a fit stopped on a NaN
        for name in problems:
            results[name] = benchmark(build[name](args), args, torch_parts, counter)

    print(f"\n{'#' * 100}\nsummary (ratios of ms per training step, slope; predictions of a batch in brackets)")
    for name, result in results.items():
        ratios = "   ".join(f"{label} {r:.3f} [{p:.3f}]" for label, (r, p) in result["ratios"].items())
        print(f"  {name:9s} {ratios}")
        rates = ", ".join(f"{VARIANTS[k]} {v:.3g}" for k, v in result["steps_per_s"].items())
        predictions = ", ".join(f"{VARIANTS[k]} {v:.3g}" for k, v in result["predictions_per_s"].items())
        print(f"  {'':9s} steps/s: {rates}\n  {'':9s} predictions/s: {predictions}")
    load = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    print(f"total {time.perf_counter() - started:.0f} s; load average (1, 5, 15 min) at end: {load}")


if __name__ == "__main__":
    main()
