"""Saving and loading RIMs, in the checksummed, atomically written file format of :mod:`imnn.persistence`.

A RIM file holds everything that rebuilds the RIM except code: its configuration (``T``,
preprocessing, initialisation and their constants), ``dimensions``, the shapes of one
instance of ``y`` and of the ``args`` (which the weights are initialised for), the name of
its link function, a built-in network's hyper-parameters, the weights, the fit's state
(optimiser state, exponential moving average, step count, PRNG key) and the history.
Score functions, custom links and user networks are code, so :meth:`RIM.load` takes them
as arguments; loading only ever builds :data:`ARCHITECTURES` from saved numbers.

:func:`write` names files ``checkpoint_{epoch:06d}`` in a folder and keeps the newest few.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _checks, interrupts, persistence
from ..persistence import _get, _Invalid, _leaves, _restore
from .architectures import Hourglass, Unet
from .models import MLP, hyperparameters

KIND = "imnn.rim-1"
ARCHITECTURES = {"MLP": MLP, "Hourglass": Hourglass, "Unet": Unet}
LINKS = {
    "identity": (lambda z: z, lambda x: x),
    "exp": (jnp.exp, jnp.log),
    "softplus": (jax.nn.softplus, lambda x: x + jnp.log(-jnp.expm1(-x))),
    "sigmoid": (jax.nn.sigmoid, jax.scipy.special.logit),
}
CONFIG_ARGUMENTS = {  # RIM argument -> its field of core.Config
    "T": "T", "score_preprocessing_method": "preprocessing", "initialization_method": "initialization",
    "epsilon": "epsilon", "beta_1": "beta_1", "beta_2": "beta_2",
}  # fmt: skip
PATTERN = re.compile(r"checkpoint_(\d{6,})$")


def _spec(array: jax.Array) -> list:
    return [list(array.shape), str(array.dtype)]


def payload(rim: Any) -> dict[str, Any]:
    """The checkpoint of ``rim`` (which has weights) as a msgpack-ready mapping."""
    state = rim._state
    return {
        "kind": KIND,
        **payload_settings(rim),
        "instance": {"y": _spec(rim._instance[0]), "args": [_spec(a) for a in rim._instance[1]]},
        "trees": {"params": _leaves(rim.params), "state": {} if state is None else _leaves(state._replace(key=None))},
        "fit": rim._state_description,
        "key": None if state is None else np.asarray(jax.random.key_data(state.key)),
        "key_impl": None if state is None else str(jax.random.key_impl(state.key)),
        "history": {name: np.asarray(values) for name, values in rim.history.items()},
    }


def save(rim: Any, path: str | os.PathLike) -> None:
    """Write ``rim`` to the file ``path`` atomically (a Ctrl-C during the write is held back)."""
    path = persistence.check_path(path)
    with interrupts.deferred():
        persistence._write_atomically(path, persistence.encode(payload(rim)))


def write(rim: Any, directory: str | os.PathLike, epoch: int, keep: int) -> Path:
    """``directory/checkpoint_{epoch:06d}``, then delete all but the ``keep`` newest checkpoints there."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"checkpoint_{epoch:06d}"
    save(rim, path)
    for old in files(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def files(directory: str | os.PathLike) -> list[Path]:
    """The checkpoint files of ``directory``, oldest (lowest epoch) first."""
    found = [p for p in Path(directory).glob("checkpoint_*") if PATTERN.fullmatch(p.name) and p.is_file()]
    return sorted(found, key=lambda p: int(PATTERN.fullmatch(p.name).group(1)))


def read(path: str | os.PathLike) -> dict[str, Any]:
    """The payload of the RIM file ``path`` (or of the newest checkpoint when ``path`` is a folder)."""
    if os.path.isdir(path):
        found = files(path)
        if not found:
            raise FileNotFoundError(f"`checkpoints_directory` ({os.fspath(path)!r}) holds no RIM checkpoint")
        path = found[-1]
    loaded = persistence._read(path)
    if loaded.get("kind") != KIND:
        raise ValueError(f"`path` ({os.fspath(path)!r}) is not a RIM checkpoint (kind {loaded.get('kind')!r})")
    return loaded


def adopt(saved: dict[str, Any], given: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The RIM arguments: each saved one where ``given`` left it at its default, else the given one,
    which must then equal the saved one."""
    config = _get(saved, "config", dict, "a mapping")
    merged = dict(given)
    for argument, field in CONFIG_ARGUMENTS.items():
        value = _get(config, field, (int, float, str), "a number or a name")
        if given[argument] == defaults[argument]:
            merged[argument] = value
        elif str(given[argument]).lower() != str(value).lower():
            raise ValueError(
                f"`{argument}` (={given[argument]!r}) differs from the checkpoint's {value!r}: leave it out "
                "to use the checkpoint's, or start a new RIM without the checkpoint"
            )
    dimensions = tuple(_get(saved, "dimensions", list, "a list"))
    if given["dimensions"] is not None and tuple(given["dimensions"]) != dimensions:
        raise ValueError(f"`dimensions` {tuple(given['dimensions'])} differ from the checkpoint's {dimensions}")
    merged["dimensions"] = dimensions
    merged["model"] = _model(saved, given["model"])
    merged["link_function"], merged["inverse_link_function"] = _links(saved, given)
    return merged


def _model(saved: dict[str, Any], model: Any) -> Any:
    architecture = saved.get("model")
    if architecture is None:
        if model is None:
            raise ValueError("the checkpoint's network is not a built-in one (MLP, Hourglass, Unet): pass `model`")
        return model
    values = dict(_get(saved, "model", dict, "a mapping"))
    name = values.pop("architecture", None)
    if name not in ARCHITECTURES:
        raise ValueError(f"the checkpoint's network {name!r} is not one of {sorted(ARCHITECTURES)}")
    rebuilt = ARCHITECTURES[name](**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    if model is not None and hyperparameters(model) != hyperparameters(rebuilt):
        raise ValueError(f"`model` {hyperparameters(model)} differs from the checkpoint's {hyperparameters(rebuilt)}")
    return rebuilt


def _links(saved: dict[str, Any], given: dict[str, Any]) -> tuple[Any, Any]:
    name = saved.get("link")
    if given["link_function"] is not None:
        if isinstance(given["link_function"], str) and given["link_function"].lower() != name:
            raise ValueError(f"`link_function` {given['link_function']!r} differs from the checkpoint's {name!r}")
        return given["link_function"], given["inverse_link_function"]
    if name is None:
        raise ValueError(
            "the checkpoint was fitted with a custom link function: pass `link_function` and `inverse_link_function`"
        )
    return name, None


def restore(rim: Any, saved: dict[str, Any]) -> None:
    """Assign the saved weights, history and fit state to ``rim`` (built by :func:`adopt`'s arguments),
    after checking all of them against weights initialised for the saved instance shapes."""
    try:
        instance = _get(saved, "instance", dict, "a mapping")
        y0 = jnp.zeros(*instance["y"])
        args0 = tuple(jnp.zeros(shape, dtype) for shape, dtype in instance["args"])
        params = _restore("params", rim._initial_params(y0, args0), saved)
        history = {}
        for name in ("loss", "val_loss"):
            values = _get(saved, f"history.{name}", np.ndarray, "an array")
            history[name] = np.asarray(values, float).reshape(-1)
        state = saved["trees"]["state"]
        key = jax.random.wrap_key_data(jnp.asarray(saved["key"]), impl=saved["key_impl"]) if state else None
    except (_Invalid, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"the RIM checkpoint does not fit this RIM: {error}") from error
    rim.params, rim.history, rim._instance = params, history, (y0, args0)
    rim._pending = (saved, key) if state else None


def check_fits(rim: Any, saved: dict[str, Any]) -> None:
    """Raise unless the checkpoint ``saved`` was written by a RIM configured like ``rim``."""
    ours = payload_settings(rim)
    theirs = {name: saved.get(name) for name in ours}
    differing = [f"`{k}`: checkpoint {theirs[k]!r}, this RIM {v!r}" for k, v in ours.items() if theirs[k] != v]
    if differing:
        raise ValueError("the checkpoint in `checkpoints_directory` does not fit this RIM: " + "; ".join(differing))


def payload_settings(rim: Any) -> dict[str, Any]:
    """What must agree between a RIM and a checkpoint it adopts."""
    builtin = type(rim.model) in ARCHITECTURES.values()
    return {"config": rim.config._asdict(), "dimensions": list(rim.dimensions), "channels": rim.channels,
            "link": rim.link_name, "model": hyperparameters(rim.model) if builtin else None}  # fmt: skip


def restored_state(pending: tuple, template: Any, description: dict) -> Any:
    """The saved fit state shaped like ``template`` (a fresh state of the fit about to run), or
    ``None`` (with a warning) when the saved fit used another optimiser."""
    saved, key = pending
    if saved.get("fit") != description:
        _checks.warn(
            f"the checkpoint's fit {saved.get('fit')} differs from this one {description}: its weights are "
            "kept but the optimiser starts afresh (resume with the same settings to continue it)"
        )
        return None
    try:
        return _restore("state", template._replace(key=None), saved)._replace(key=key)
    except _Invalid as error:
        raise ValueError(f"the checkpoint's optimiser state does not fit this fit: {error}") from error
