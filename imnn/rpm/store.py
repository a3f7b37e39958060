"""Saving and loading RPMs in the checksummed, atomically written format of :mod:`imnn.persistence`.

A file holds the latent family, the normaliser and ``q`` settings, the item shape of each
view, a fixed prior, the built-in factors' hyper-parameters, the weights, the training
normaliser (every training item's factor increments, so loaded posteriors use it) and the
history. User networks are code: :meth:`RPM.load` takes them as ``factors`` (and
``q_network``). The optimiser state is not kept: a loaded model's next ``fit`` starts a fresh optimiser.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import interrupts, persistence
from ..persistence import _get, _leaves, _restore
from . import factors as factor_networks
from . import families

KIND = "imnn.rpm-1"


def save(rpm: Any, path: str | os.PathLike) -> None:
    built_in = tuple(factor_networks.BUILT_IN.values())
    payload = {
        "kind": KIND,
        "latent": rpm.latent.describe(),
        "q": rpm.q,
        "normaliser": rpm.normaliser,
        "item_shapes": [list(s) for s in rpm.item_shapes],
        "factors": [f.describe() if isinstance(f, built_in) else None for f in rpm.factors],
        "q_network": rpm.q_network.describe() if isinstance(rpm.q_network, built_in) else None,
        "fixed_prior": None if rpm._fixed_prior is None else _leaves(rpm._fixed_prior),
        "trees": {"params": _leaves(rpm.params), "bank": _leaves(rpm._bank)},
        "history": {name: np.asarray(values) for name, values in rpm.history.items()},
    }
    path = persistence.check_path(path)
    with interrupts.deferred():
        persistence._write_atomically(path, persistence.encode(payload))


def load(cls: type, path: str | os.PathLike, factors: Any, q_network: Any = None) -> Any:
    saved = persistence._read(path)
    if saved.get("kind") != KIND:
        raise ValueError(f"`path` ({os.fspath(path)!r}) is not an RPM file (kind {saved.get('kind')!r})")
    latent = families.from_description(_get(saved, "latent", dict, "a mapping"))
    described = _get(saved, "factors", list, "a list")
    if factors is None:
        factors = [factor_networks.from_description(d) for d in described]
        if any(f is None for f in factors):
            raise ValueError("the saved RPM used factor networks of your own: give them as `factors`")
    elif len(factors) != len(described):
        raise ValueError(f"`factors` has {len(factors)} networks, but the saved RPM has {len(described)} views")
    if saved["q"] == "amortized" and q_network is None:
        q_network = factor_networks.from_description(saved.get("q_network"))
        if q_network is None:
            raise ValueError("the saved RPM's amortised q used a network of your own: give it as `q_network`")
    rpm = cls(latent, factors, q=saved["q"], normaliser=saved["normaliser"], q_network=q_network)
    natural = jax.eval_shape(latent.prior_natural, latent.init_prior())
    if saved["fixed_prior"] is not None:
        rpm._fixed_prior = _unflatten(natural, saved["fixed_prior"])
    rpm._build([tuple(int(n) for n in s) for s in saved["item_shapes"]])
    try:
        n_items = len(np.asarray(saved["trees"]["bank"]["0"])[0])  # the training items (leaves: (J, N, ...))
        rpm.params = _restore("params", jax.eval_shape(lambda: rpm._initial_weights(n_items)), saved)
    except persistence._Invalid as error:
        raise ValueError(f"`path` ({os.fspath(path)!r}) does not fit these `factors`: {error}") from None
    one_item = tuple(jnp.zeros((1, *shape)) for shape in rpm.item_shapes)
    rpm._bank = _unflatten(jax.eval_shape(rpm._model.increments, rpm.params.factors, one_item), saved["trees"]["bank"])
    rpm.history = {name: np.asarray(values) for name, values in _get(saved, "history", dict, "a mapping").items()}
    return rpm


def _unflatten(like: Any, leaves: dict[str, np.ndarray]) -> Any:
    """The saved ``leaves`` in the tree structure of ``like``."""
    arrays = [jnp.asarray(leaves[str(i)]) for i in range(len(leaves))]
    return jax.tree.unflatten(jax.tree.structure(like), arrays)
