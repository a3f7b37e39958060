"""RPM fit speed: steps per second of the discrete (Categorical(4)) and Gaussian(1) models with the
``"full"`` and ``"cache"`` normalisers, for N = 10³ … 10⁵ items (batch 256, J = 3 views, MLP(32)
factors), and the ratio to a minimal hand-written ``jax.jit`` loop of the same maths (full normaliser).

    python benchmarks/rpm_speed.py [--quick]

The full normaliser recomputes (and differentiates) every item's factor each step, so its cost
grows like N; the cache refreshes only the minibatch's rows of its bank. The Gaussian bound also
sums over the bank for every minibatch item (J·B·N log-partitions) with either normaliser.
"""

from __future__ import annotations

import math
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from imnn import rpm
from imnn.rpm import objectives

J, BATCH, HIDDEN = 3, 256, 32


def views(n: int) -> tuple:
    rng = np.random.default_rng(0)
    z = rng.standard_normal(n)
    return tuple((z[:, None] * (j + 1) + rng.standard_normal((n, 4))).astype(np.float32) for j in range(J))


def library_seconds_per_step(latent, normaliser: str, data: tuple, steps: int) -> float:
    model = rpm.RPM(latent, [rpm.MLP((HIDDEN,)) for _ in range(J)], normaliser=normaliser)
    model.fit(data, steps=2, batch_size=BATCH, progress=False)  # compiles
    started = time.perf_counter()
    model.fit(data, steps=steps, batch_size=BATCH, progress=False)
    jax.block_until_ready(model.params)
    return (time.perf_counter() - started) / steps


def hand_written_seconds_per_step(latent, data: tuple, steps: int) -> float:
    """The same model, objective and Adam in one ``lax.fori_loop``, full normaliser."""
    n = data[0].shape[0]

    def init(key):
        keys = jax.random.split(key, J)
        layer = lambda k, i, o: (jax.random.normal(k, (i, o)) / math.sqrt(i), jnp.zeros(o))
        return [(layer(k, 4, HIDDEN), layer(jax.random.fold_in(k, 1), HIDDEN, latent.n_raw)) for k in keys], (
            latent.init_prior()
        )

    def factor(p, x):
        (w1, b1), (w2, b2) = p
        return jax.nn.relu(x @ w1 + b1) @ w2 + b2

    def loss(params, key):
        nets, prior = params
        bank = [latent.increment(factor(p, x)) for p, x in zip(nets, data)]
        bank = jax.tree.map(lambda *a: jnp.stack(a), *bank)
        index = jax.random.choice(key, n, (BATCH,), replace=False)
        batch = jax.tree.map(lambda a: a[:, index], bank)
        return -jnp.mean(objectives.per_item(latent, latent.prior_natural(prior), batch, bank))

    optimiser = optax.adam(1e-3)

    @jax.jit
    def run(params, key):
        def body(i, carry):
            params, state = carry
            grads = jax.grad(loss)(params, jax.random.fold_in(key, i))
            updates, state = optimiser.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        return jax.lax.fori_loop(0, steps, body, (params, optimiser.init(params)))

    params = init(jax.random.key(0))
    jax.block_until_ready(run(params, jax.random.key(1)))  # compiles
    started = time.perf_counter()
    jax.block_until_ready(run(params, jax.random.key(2)))
    return (time.perf_counter() - started) / steps


def main(quick: bool) -> None:
    sizes = (1_000, 10_000) if quick else (1_000, 10_000, 100_000)
    platform = jax.devices()[0].platform
    print(f"J = {J} views, batch {BATCH}, MLP({HIDDEN}) factors; {jax.device_count()} {platform} device(s)")
    print(f"{'latent':<15}{'N':>8}{'full steps/s':>15}{'cache steps/s':>15}{'hand-written':>15}{'imnn/hand':>11}")
    for latent in (rpm.Categorical(4), rpm.Gaussian(1)):
        for n in sizes:
            data = views(n)
            steps = max(5, int(2e6 / n / (1 if latent.discrete else 30)))
            full = library_seconds_per_step(latent, "full", data, steps)
            cache = library_seconds_per_step(latent, "cache", data, steps)
            hand = hand_written_seconds_per_step(latent, data, steps)
            name = type(latent).__name__
            print(f"{name:<15}{n:>8}{1 / full:>15.1f}{1 / cache:>15.1f}{1 / hand:>15.1f}{full / hand:>11.3f}")


if __name__ == "__main__":
    main("--quick" in sys.argv)
