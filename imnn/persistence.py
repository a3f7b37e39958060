"""Save and load fitted IMNNs: weights, optimiser state, history and Fisher statistics.

A checkpoint is one msgpack file (``flax.serialization``). Each pytree (weights,
optimiser state) is stored as its list of leaves, so any network or optimiser
the adapters accept round-trips, and loading checks every leaf against the
model it is loaded into. Arrays are fetched to the host first, so a checkpoint
written on several devices (or a GPU) loads on one CPU. Writes go to a
temporary file that replaces the old checkpoint only once complete.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from .adapters import OptimiserState

FORMAT = "imnn-checkpoint-1"
STATISTICS = ("F", "invF", "C", "invC", "μ", "dμ_dθ")


def _family(model: Any) -> str:
    """The class without ``Aggregated``/``Dataset``: the same maths whatever the data layout."""
    return type(model).__name__.removeprefix("Aggregated").removeprefix("Dataset")


def _settings(model: Any) -> dict[str, Any]:
    δθ = getattr(model, "δθ", None)
    return {
        "family": _family(model),
        "n_s": model.n_s,
        "n_d": model.n_d,
        "n_params": model.n_params,
        "n_summaries": model.n_summaries,
        "input_shape": list(model.input_shape),
        "θ_fid": np.asarray(model.θ_fid).tolist(),
        "δθ": None if δθ is None else np.asarray(δθ).tolist(),
    }


def _leaves(tree: Any) -> dict[str, np.ndarray]:
    return {str(i): np.asarray(jax.device_get(leaf)) for i, leaf in enumerate(jax.tree.leaves(tree))}


def save(model: Any, path: str | os.PathLike) -> None:
    """Write ``model`` to ``path`` atomically (an existing checkpoint survives a failed write)."""
    payload = {
        "format": FORMAT,
        "settings": _settings(model),
        "trees": {name: _leaves(getattr(model, name)) for name in ("w", "best_w", "final_w", "initial_w")}
        | {"params": _leaves(model.state.params), "opt_state": _leaves(model.state.opt_state)},
        "count": int(model.state.count),
        "history": {name: np.asarray(values) for name, values in model.history.items()},
        "statistics": None if model.F is None else {n: np.asarray(getattr(model, n)) for n in STATISTICS},
    }
    path = Path(path)
    data = serialization.msgpack_serialize(payload)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _read(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`path` ({str(path)!r}) is not a checkpoint file")
    try:
        payload = serialization.msgpack_restore(path.read_bytes())
    except Exception as error:
        raise ValueError(f"`path` ({str(path)!r}) is not a readable imnn checkpoint: {error}") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"`path` ({str(path)!r}) is not an imnn checkpoint (format {FORMAT!r})")
    return payload


def _restore(name: str, target: Any, leaves: dict[str, np.ndarray]) -> Any:
    expected = jax.tree.leaves(target)
    if len(leaves) != len(expected):
        raise ValueError(
            f"the checkpoint's `{name}` has {len(leaves)} arrays but the model's has {len(expected)}: "
            "is it the same network and optimiser?"
        )
    restored = []
    for i, want in enumerate(expected):
        got = leaves[str(i)]
        if tuple(got.shape) != tuple(np.shape(want)) or got.dtype != np.asarray(want).dtype:
            raise ValueError(
                f"the checkpoint's `{name}` array {i} is {got.dtype}{list(got.shape)} but the model's is "
                f"{np.asarray(want).dtype}{list(np.shape(want))}: is it the same network and optimiser?"
            )
        restored.append(jnp.asarray(got))
    return jax.tree.unflatten(jax.tree.structure(target), restored)


def load(model: Any, path: str | os.PathLike) -> Any:
    """Restore a checkpoint written by :func:`save` into a compatible, freshly built ``model``."""
    payload = _read(path)
    saved, ours = payload["settings"], _settings(model)
    differing = [f"`{k}`: checkpoint {saved.get(k)!r}, model {v!r}" for k, v in ours.items() if saved.get(k) != v]
    if differing:
        raise ValueError("the checkpoint does not fit this model: " + "; ".join(differing))
    trees = payload["trees"]
    restored = {name: _restore(name, model.initial_w, trees[name]) for name in ("w", "best_w", "final_w", "initial_w")}
    params = _restore("params", model.state.params, trees["params"])
    opt_state = _restore("opt_state", model.state.opt_state, trees["opt_state"])
    history = payload["history"]
    if set(history) != set(model.history):
        raise ValueError(f"the checkpoint's history has {sorted(history)} but the model's has {sorted(model.history)}")
    for name, values in restored.items():
        setattr(model, name, values)
    model.state = OptimiserState(params, opt_state, jnp.asarray(payload["count"], jnp.int32))
    for name, values in history.items():
        model.history[name] = float(values) if name == "max_detF" else np.asarray(values)
    statistics = payload["statistics"]
    for name in STATISTICS:
        setattr(model, name, None if statistics is None else jnp.asarray(statistics[name]))
    return model
