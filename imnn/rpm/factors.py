"""Recognition factor networks: ``factor(x_j) -> float(latent.n_raw)`` for ONE item of view ``j``.

A factor is a user's network (flax.linen, flax.nnx, equinox or a stax-style pair, as for the
IMNN) or one of the built-ins :class:`MLP` and :class:`Linear`, whose output head the library
sizes from the latent family. :func:`as_factors` turns them into pure ``init``/``apply`` pairs
and checks each output size.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..adapters import Network, as_network
from ..rim.models import activation


class _MLPModule(nn.Module):
    hidden: tuple[int, ...]
    activation: str
    n_out: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = jnp.ravel(x)
        for width in self.hidden:
            h = activation(self.activation)(nn.Dense(width)(h))
        return nn.Dense(self.n_out)(h)


@dataclasses.dataclass(frozen=True)
class MLP:
    """A dense factor network on the flattened item: ``hidden`` layers of ``activation``, then a
    linear head of ``latent.n_raw`` outputs."""

    hidden: tuple[int, ...] = (64, 64)
    activation: str = "relu"

    def build(self, n_raw: int) -> nn.Module:
        return _MLPModule(tuple(self.hidden), self.activation, n_raw)

    def describe(self) -> dict[str, Any]:
        return {"architecture": "MLP", "hidden": list(self.hidden), "activation": self.activation}


@dataclasses.dataclass(frozen=True)
class Linear:
    """A linear (affine) factor network on the flattened item."""

    def build(self, n_raw: int) -> nn.Module:
        return _MLPModule((), "relu", n_raw)

    def describe(self) -> dict[str, Any]:
        return {"architecture": "Linear"}


BUILT_IN = {"MLP": MLP, "Linear": Linear}


def from_description(description: dict[str, Any] | None) -> Any:
    """The built-in factor a :meth:`describe` mapping names, or ``None`` for a user's network."""
    if description is None:
        return None
    if description["architecture"] == "MLP":
        return MLP(tuple(int(w) for w in description["hidden"]), str(description["activation"]))
    return Linear()


def as_factors(factors: Any, item_shapes: list[tuple[int, ...]], n_raw: int, name: str = "factors") -> list[Network]:
    """One :class:`~imnn.adapters.Network` per view, each checked to map one item to ``n_raw`` numbers
    (errors name the argument ``name[j]``, or ``name`` itself for a single network)."""
    networks = []
    for j, (factor, shape) in enumerate(zip(factors, item_shapes)):
        label = f"{name}[{j}]" if len(factors) > 1 or name == "factors" else name
        model = factor.build(n_raw) if isinstance(factor, tuple(BUILT_IN.values())) else factor
        try:
            network = as_network(model, shape)
        except TypeError as error:
            raise TypeError(f"`{label}`: {error}") from None
        params = jax.eval_shape(network.init, jax.random.key(0))
        out = jax.eval_shape(network.apply, params, jax.ShapeDtypeStruct(shape, jnp.float32))
        if getattr(out, "shape", None) != (n_raw,):
            raise ValueError(
                f"`{label}` maps one item of shape {shape} to an output of shape "
                f"{getattr(out, 'shape', type(out).__name__)}, but the latent needs ({n_raw},) raw numbers "
                "(`latent.n_raw`); use rpm.MLP / rpm.Linear to have the head sized for you"
            )
        networks.append(network)
    return networks
