"""Names that IMNN 0.3.2 notebooks read on the IMNN classes, with their 0.3.2 meaning.

:class:`imnn._core.IMNNBase` and the aggregated and dataset classes compose these in;
``docs/migration.md`` lists every 0.3.2 name and what it is here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from . import _checks, fisher


def network_function(apply: Callable[[Any, jax.Array], jax.Array], input_shape: tuple[int, ...]) -> Callable:
    """``model(w, d)``: the network ``apply`` (for ONE simulation) at weights ``w``, for one or many.

    ``d`` is float(*input_shape) → float(n_summaries), or a batch float(n, *input_shape) →
    float(n, n_summaries). One jitted function serves both (compiled once per input shape).
    """
    batched = jax.jit(jax.vmap(apply, (None, 0)))

    def model(w: Any, d: Any) -> jax.Array:
        single = _checks.one_or_batch("d", d, input_shape)
        x = batched(w, jnp.asarray(d)[None] if single else d)
        return x[0] if single else x

    return model


def get_α(λ: float, ϵ: float) -> float:
    """The sharpness ``α = −ln(ϵ(λ − 1) + ϵ²/(1 + ϵ)) / ϵ`` of the regularisation switch ``fit(λ, ϵ)`` uses.

    See :func:`imnn.fisher.alpha`; ``λ`` and ``ϵ`` are checked as ``fit`` checks them.
    """
    λ, ϵ = _checks.regularisation(λ, ϵ)
    return float(fisher.alpha(λ, ϵ))


simulate = property(
    lambda self: self._needs_key, doc="Whether fitting draws fresh simulations from a ``simulator`` (0.3.2's flag)."
)
validate = property(
    lambda self: self._validation_data is not None, doc="Whether there is a validation set (0.3.2's flag)."
)
n_devices = property(lambda self: len(self.devices), doc="Number of ``devices`` the simulations are batched over.")
