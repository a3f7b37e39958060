"""Hourglass and Unet: shapes in 1-3 D, a GRU that updates all of its state, skip connections, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imnn.rim import RIM, Hourglass, Unet

CASES = [(1, (16,)), (2, (8, 12)), (3, (4, 4, 8))]


def _run(model, dims, channels=2, seed=0):
    h = model.initialize_hidden_states(dims)
    x = jax.random.normal(jax.random.key(seed), (*dims, channels))
    params = model.init(jax.random.key(1), x, x, x, h)
    return params, x, h, model.apply(params, x, x, x, h)


@pytest.mark.parametrize("cls", [Hourglass, Unet])
@pytest.mark.parametrize("d, dims", CASES)
@pytest.mark.parametrize("resample_with_conv", [True, False])
def test_update_and_state_shapes(cls, d, dims, resample_with_conv):
    model = cls(channels=2, dimensions=d, nf=4, hidden_units=4, resample_with_conv=resample_with_conv)
    _, x, h, (dx, h_new) = _run(model, dims)
    assert dx.shape == x.shape
    assert h.shape == (*(n // 4 for n in dims), 4) and h_new.shape == h.shape
    assert bool(jnp.all(jnp.isfinite(dx)))


def test_gru_updates_all_of_its_state():
    """torch_rim's GRUBlock returned the first half of the old state unchanged."""
    model = Hourglass(channels=1, dimensions=1, nf=4, hidden_units=6)
    _, _, h, (_, h_new) = _run(model, (8,), channels=1)
    first, second = np.split(np.asarray(h_new), 2, axis=-1)
    assert np.abs(first - np.asarray(h)[..., :3]).max() > 1e-4
    assert np.abs(second).max() > 1e-4


def test_unet_has_skip_connections():
    """Joining the encoder's levels adds decoder weights ("cat") or changes the output ("sum")."""
    outputs = {}
    for name, model in {"hourglass": Hourglass(1, 1, nf=4, hidden_units=4),
                        "cat": Unet(1, 1, nf=4, hidden_units=4, combine_method="cat"),
                        "sum": Unet(1, 1, nf=4, hidden_units=4, combine_method="sum")}.items():  # fmt: skip
        params, _, _, (dx, _) = _run(model, (16,), channels=1)
        outputs[name] = dx
        n_params = sum(a.size for a in jax.tree.leaves(params))
        outputs[name + "_n"] = n_params
    assert outputs["cat_n"] > outputs["hourglass_n"]  # the decoder's first convs see the joined channels
    assert not np.allclose(outputs["sum"], outputs["hourglass"])


@pytest.mark.parametrize("kwargs, match", [
    ({"dimensions": 4}, "`dimensions` should be 1, 2 or 3"),
    ({"hidden_units": 5}, "`hidden_units` should be an even int"),
    ({"combine_method": "mean"}, "`combine_method` should be one of"),
    ({"ch_mult": ()}, "`ch_mult` should be a non-empty tuple"),
    ({"activation": "gelu2"}, "`activation` should be one of"),
])  # fmt: skip
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Hourglass(channels=1, **kwargs)


def test_spatial_sizes_must_divide():
    with pytest.raises(ValueError, match=r"divisible by 2\*\*2 = 4, but `dimensions` is \(6, 8\)"):
        Hourglass(channels=1).initialize_hidden_states((6, 8))


def test_hyperparameters_rebuild_the_network():
    model = Unet(channels=3, dimensions=1, nf=8, ch_mult=(2, 1), hidden_units=4, combine_method="sum")
    saved = model.hyperparameters
    assert saved["architecture"] == "Unet" and saved["hidden_units"] == 4  # torch_rim drops hidden_units
    rebuilt = Unet(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k != "architecture"})
    assert rebuilt == model


def test_condition_on_observation_needs_y_on_the_grid():
    model = Hourglass(channels=1, dimensions=1, nf=4, hidden_units=4, condition_on_observation=True)
    h = model.initialize_hidden_states((8,))
    x = jnp.zeros((8, 1))
    model.init(jax.random.key(0), x, jnp.zeros(8), x, h)  # y without a channel axis is fine
    with pytest.raises(ValueError, match="needs y on the grid of x"):
        model.init(jax.random.key(0), x, jnp.zeros(5), x, h)


def test_rim_with_an_hourglass_on_a_2d_field():
    """A blurred field: the RIM vmaps the Hourglass over the batch and returns channels-last fields."""
    rim = RIM((8, 8), Hourglass(channels=1, nf=4, hidden_units=4), score_fn=lambda x, y: y - x, T=3)
    y = jax.random.normal(jax.random.key(0), (5, 8, 8, 1))
    assert rim.forward(y).shape == (3, 5, 8, 8, 1)
    assert rim.predict(y).shape == (5, 8, 8, 1)
    losses = rim.fit((y, y), epochs=2, batch_size=5, learning_rate=1e-2, progress=False)
    assert len(losses) == 2 and np.isfinite(losses).all()
