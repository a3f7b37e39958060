"""Save and load fitted IMNNs: weights, optimiser state, history and Fisher statistics.

A checkpoint file is a header line (``MAGIC``), the SHA-256 digest of the payload
(32 bytes) and the payload: one msgpack document (``flax.serialization``). Changing
any bit of the file after it was written is detected when it is loaded.

Each pytree (weights, optimiser state) is stored as its list of leaves, so any network
or optimiser the adapters accept round-trips. Loading checks the whole payload (every
key, type, setting, leaf shape and dtype, history entry and statistic) against the
model before it assigns anything, so a checkpoint that is refused leaves the model as
it was. Arrays are fetched to the host first, so a checkpoint written on several
devices (or a GPU) loads on one CPU. Writes go to a temporary file in the same folder
that replaces the old checkpoint only once complete.

Files of the first format (``imnn-checkpoint-1``: the bare msgpack payload, no digest)
still load, with the same structural checks but no integrity check.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from . import interrupts
from .adapters import OptimiserState

FORMAT = "imnn-checkpoint-2"
LEGACY_FORMAT = "imnn-checkpoint-1"
MAGIC = FORMAT.encode() + b"\n"
DIGEST_SIZE = hashlib.sha256().digest_size
STATISTICS = ("F", "invF", "C", "invC", "μ", "dμ_dθ")
WEIGHTS = ("w", "best_w", "final_w", "initial_w")
DEFAULT_NAME_MAX = 255


class _Invalid(Exception):
    """The payload does not fit the model; the message says what (``load`` adds the path)."""


class _Restored(NamedTuple):
    """Everything ``load`` assigns, built and checked before the model is touched."""

    weights: dict[str, Any]
    state: OptimiserState
    history: dict[str, Any]
    statistics: dict[str, jax.Array] | None


# ------------------------------------------------------------------ paths
def _where(name: str, path: str | os.PathLike) -> str:
    return f"`{name}` ({os.fspath(path)!r})"


def _name_max(folder: Path) -> int:
    """Longest file name (bytes) the file system of ``folder`` allows."""
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows) or no such setting
        return DEFAULT_NAME_MAX
    return limit if limit > 0 else DEFAULT_NAME_MAX


def check_path(path: str | os.PathLike) -> Path:
    """Check, before any training, that a checkpoint can be written to ``path``.

    Returns:
        ``path`` as a ``pathlib.Path``.

    Raises:
        TypeError: ``path`` is not a ``str`` or ``os.PathLike``.
        FileNotFoundError: its folder does not exist.
        ValueError: ``path`` is (or ends like) a folder, its parent is not a folder or is
            not writable, or the file name is longer than the file system allows.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`checkpoint` must be a file path (str or os.PathLike) but is {type(path).__name__}")
    where = _where("checkpoint", path)
    text = os.fspath(path)
    path = Path(path)
    folder = path.parent
    # os.path's tests, unlike Path's, answer False rather than raise (e.g. for a name too long)
    if text.endswith(("/", os.sep)) or os.path.isdir(path):
        raise ValueError(f"{where} is a folder: give the name of a file inside it")
    if not os.path.exists(folder):
        raise FileNotFoundError(f"{where}: the folder {str(folder)!r} does not exist")
    if not os.path.isdir(folder):
        raise ValueError(f"{where}: {str(folder)!r} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{where}: the folder {str(folder)!r} is not writable")
    size, limit = len(os.fsencode(path.name)), _name_max(folder)
    if size > limit:
        raise ValueError(f"{where}: the file name is {size} bytes long, more than the {limit} the file system allows")
    return path


# ------------------------------------------------------------------ saving
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


def _payload(model: Any) -> dict[str, Any]:
    return {
        "settings": _settings(model),
        "trees": {name: _leaves(getattr(model, name)) for name in WEIGHTS}
        | {"params": _leaves(model.state.params), "opt_state": _leaves(model.state.opt_state)},
        "count": int(model.state.count),
        "history": {name: np.asarray(values) for name, values in model.history.items()},
        "statistics": None if model.F is None else {n: np.asarray(getattr(model, n)) for n in STATISTICS},
    }


def encode(payload: dict[str, Any]) -> bytes:
    """The bytes of a checkpoint file: header, SHA-256 digest of the msgpack payload, payload."""
    body = serialization.msgpack_serialize(payload)
    return MAGIC + hashlib.sha256(body).digest() + body


def _write_error(path: Path, error: OSError) -> OSError:
    """``error`` (same class and errno) retold with the user's path instead of the temporary file's."""
    message = f"could not write checkpoint {_where('path', path)}: {error.strerror or error}"
    try:
        retold = type(error)(message)
    except TypeError:  # an OSError subclass with another signature
        retold = OSError(message)
    retold.errno = error.errno
    return retold


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a short-named temporary file in the same folder."""
    temporary = None
    try:
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".imnn-", suffix=".tmp")
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise _write_error(path, error) from error
        raise


def save(model: Any, path: str | os.PathLike) -> None:
    """Write ``model`` to ``path`` atomically (an existing checkpoint survives a failed write).

    Raises:
        OSError: the file could not be written; the message names ``path``.
    """
    _write_atomically(Path(path), encode(_payload(model)))


# ------------------------------------------------------------------ reading
def decode(data: bytes, where: str = "`path`") -> dict[str, Any]:
    """The payload of checkpoint bytes, after checking the header and the digest.

    Raises:
        ValueError: not a checkpoint, damaged (checksum mismatch) or unreadable; the
            message starts with ``where``.
    """
    if not data.startswith(MAGIC):
        return _decode_legacy(data, where)
    digest, body = data[len(MAGIC) : len(MAGIC) + DIGEST_SIZE], data[len(MAGIC) + DIGEST_SIZE :]
    if hashlib.sha256(body).digest() != digest:
        raise ValueError(
            f"{where} is damaged: checksum mismatch (the file was corrupted or changed after it was written)"
        )
    try:
        payload = serialization.msgpack_restore(body)
    except Exception as error:
        raise ValueError(f"{where} is not a readable imnn checkpoint: {error}") from error
    if not isinstance(payload, dict):
        raise ValueError(f"{where} is damaged: its payload is {type(payload).__name__}, expected a mapping")
    return payload


def _decode_legacy(data: bytes, where: str) -> dict[str, Any]:
    """A first-format file (bare msgpack, no digest), or a clear error for anything else."""
    header = data.split(b"\n", 1)[0][:64]
    if header.startswith(b"imnn-checkpoint-"):
        raise ValueError(
            f"{where} has the header {header.decode(errors='replace')!r}, which this version of imnn "
            f"does not read ({FORMAT!r}): it is newer, or damaged"
        )
    unreadable = ValueError(f"{where} is not an imnn checkpoint, or it is damaged (format {FORMAT!r})")
    try:
        payload = serialization.msgpack_restore(data)
    except Exception as error:
        raise unreadable from error
    if not isinstance(payload, dict) or payload.get("format") != LEGACY_FORMAT:
        raise unreadable
    return payload


def _read(path: str | os.PathLike) -> dict[str, Any]:
    where = _where("path", path)
    path = Path(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{where} is not a checkpoint file")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise OSError(f"could not read checkpoint {where}: {error.strerror or error}") from error
    return decode(data, where)


# ------------------------------------------------------------------ checking
def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array {value.dtype}{list(value.shape)}"
    return type(value).__name__


def _get(payload: dict[str, Any], dotted: str, kind: type | tuple[type, ...], expected: str) -> Any:
    """``payload[a][b]`` for ``"a.b"``, which must be an instance of ``kind`` (``expected`` in words)."""
    value: Any = payload
    keys = dotted.split(".")
    for i, key in enumerate(keys):
        if not isinstance(value, dict):
            raise _Invalid(f"`{'.'.join(keys[:i])}` is {_describe(value)}, expected a mapping")
        if key not in value:
            raise _Invalid(f"missing `{'.'.join(keys[: i + 1])}`")
        value = value[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _Invalid(f"`{dotted}` is {_describe(value)}, expected {expected}")
    return value


def _equal(a: Any, b: Any) -> bool:
    """``a == b`` for plain values, False where comparing them is ambiguous (arrays)."""
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _check_settings(model: Any, payload: dict[str, Any]) -> None:
    saved = _get(payload, "settings", dict, "a mapping")
    ours = _settings(model)
    missing = [f"`settings.{k}`" for k in ours if k not in saved]
    if missing:
        raise _Invalid("missing " + ", ".join(missing))
    differing = [f"`{k}`: checkpoint {saved[k]!r}, model {v!r}" for k, v in ours.items() if not _equal(saved[k], v)]
    if differing:
        raise _Invalid("the checkpoint does not fit this model: " + "; ".join(differing))


def _spec(leaf: Any) -> tuple[tuple[int, ...], np.dtype]:
    dtype = leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
    return tuple(np.shape(leaf)), np.dtype(dtype)


def _restore(name: str, target: Any, payload: dict[str, Any]) -> Any:
    """The tree ``trees.<name>`` of the payload, shaped like ``target`` leaf by leaf."""
    leaves = _get(payload, f"trees.{name}", dict, "a mapping of arrays")
    expected = jax.tree.leaves(target)
    if len(leaves) != len(expected):
        raise _Invalid(
            f"the checkpoint's `{name}` has {len(leaves)} arrays but the model's has {len(expected)}: "
            "is it the same network and optimiser?"
        )
    restored = []
    for i, want in enumerate(expected):
        got = _get(payload, f"trees.{name}.{i}", np.ndarray, "an array")
        shape, dtype = _spec(want)
        if got.shape != shape or got.dtype != dtype:
            raise _Invalid(
                f"the checkpoint's `{name}` array {i} is {got.dtype}{list(got.shape)} but the model's is "
                f"{dtype}{list(shape)}: is it the same network and optimiser?"
            )
        restored.append(jnp.asarray(got))
    return jax.tree.unflatten(jax.tree.structure(target), restored)


def _count(payload: dict[str, Any]) -> jax.Array:
    count = _get(payload, "count", (int, np.integer), "an int")
    if not 0 <= count < 2**31:
        raise _Invalid(f"`count` is {count}, expected an int32 ≥ 0")
    return jnp.asarray(count, jnp.int32)


def _float_array(value: Any, name: str, ndim: int) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise _Invalid(f"`{name}` is {_describe(value)}, expected an array")
    if value.ndim != ndim or not np.issubdtype(value.dtype, np.floating):
        raise _Invalid(f"`{name}` is {_describe(value)}, expected a {ndim}-D floating-point array")
    return value


def _history(model: Any, payload: dict[str, Any]) -> dict[str, Any]:
    saved = _get(payload, "history", dict, "a mapping")
    if set(saved) != set(model.history):
        raise _Invalid(f"the checkpoint's history has {sorted(saved)} but the model's has {sorted(model.history)}")
    history: dict[str, Any] = {}
    for name, value in saved.items():
        if name == "max_detF":
            scalar = value if isinstance(value, float) else _float_array(value, f"history.{name}", 0)
            history[name] = float(scalar)
        else:
            history[name] = _float_array(value, f"history.{name}", 1)
    lengths = {name: len(values) for name, values in history.items() if name != "max_detF"}
    if len(set(lengths.values())) > 1:
        raise _Invalid(f"the history arrays have different lengths: {lengths}")
    return history


def _statistics(model: Any, payload: dict[str, Any]) -> dict[str, jax.Array] | None:
    saved = _get(payload, "statistics", (dict, type(None)), "a mapping or None")
    if saved is None:
        return None
    p, s = model.n_params, model.n_summaries
    shapes = {"F": (p, p), "invF": (p, p), "C": (s, s), "invC": (s, s), "μ": (s,), "dμ_dθ": (s, p)}
    statistics = {}
    for name in STATISTICS:
        value = _get(payload, f"statistics.{name}", np.ndarray, "an array")
        if value.shape != shapes[name] or not np.issubdtype(value.dtype, np.floating):
            raise _Invalid(f"`statistics.{name}` is {_describe(value)}, expected a float array{list(shapes[name])}")
        statistics[name] = jnp.asarray(value)
    return statistics


def _prepare(model: Any, payload: dict[str, Any]) -> _Restored:
    """Check the whole payload against ``model`` and build what ``load`` assigns."""
    _check_settings(model, payload)
    weights = {name: _restore(name, model.initial_w, payload) for name in WEIGHTS}
    params = _restore("params", model.state.params, payload)
    opt_state = _restore("opt_state", model.state.opt_state, payload)
    state = OptimiserState(params, opt_state, _count(payload))
    return _Restored(weights, state, _history(model, payload), _statistics(model, payload))


def _assign(model: Any, restored: _Restored) -> None:
    for name, values in restored.weights.items():
        setattr(model, name, values)
    model.state = restored.state
    model.history.update(restored.history)
    for name in STATISTICS:
        setattr(model, name, None if restored.statistics is None else restored.statistics[name])


def load(model: Any, path: str | os.PathLike) -> Any:
    """Restore a checkpoint written by :func:`save` into a compatible, freshly built ``model``.

    The whole file is checked first (digest, then every key, type, shape and setting),
    so on any error ``model`` is left unchanged. First-format files (no digest) are
    read too, with the structural checks only.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: the file is not a checkpoint, is damaged (checksum mismatch or
            structure) or does not fit ``model``; the message names ``path`` and the problem.
    """
    payload = _read(path)
    try:
        restored = _prepare(model, payload)
    except _Invalid as error:
        raise ValueError(f"{_where('path', path)}: {error}") from None
    with interrupts.deferred():  # all of it or, on a second Ctrl-C only, as little as possible
        _assign(model, restored)
    return model
