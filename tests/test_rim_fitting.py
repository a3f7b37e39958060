"""RIM training beyond one in-memory fit: checkpoints, resuming, loading, EMA, devices,
iterable datasets and the nnx / stax network adapters — each against its in-memory,
uninterrupted or hand-computed counterpart."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from test_rim import N, score_fn, simulator

from imnn.rim import MLP, RIM

SMALL = dict(epochs=2, n_iterations_in_epoch=3, batch_size=8, learning_rate=1e-3, progress=False)


def small_rim(**kwargs):
    arguments = dict(T=4, score_preprocessing_method="adam", key=jax.random.key(1)) | kwargs
    return RIM((), MLP(N, hidden_units=16), score_fn=score_fn, **arguments)


@pytest.fixture(scope="module")
def data():
    y, x, A, σ = jax.vmap(simulator)(jax.random.split(jax.random.key(5), 64))
    return y, x, A, σ


def assert_same_tree(a, b, **tolerance):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), **tolerance)


# ----------------------------------------------------------------- checkpoints
def test_save_and_load_give_identical_predictions_and_keep_the_configuration(tmp_path, data):
    rim = small_rim(T=3, link_function="softplus", initialization_method="model")
    y, x, A, σ = data
    rim.fit((y, jax.nn.softplus(x), A, σ), **SMALL)  # a positive x for the softplus link
    rim.save(tmp_path / "rim")
    loaded = RIM.load(tmp_path / "rim", score_fn=score_fn)
    assert loaded.config == rim.config and loaded.link_name == "softplus" and loaded.T == 3
    np.testing.assert_array_equal(loaded.predict(*data[:1], *data[2:]), rim.predict(*data[:1], *data[2:]))
    np.testing.assert_array_equal(loaded.history["loss"], rim.history["loss"])
    with pytest.raises(ValueError, match="custom link function"):
        custom = small_rim(link_function=jnp.exp, inverse_link_function=jnp.log)
        custom.predict(data[0], *data[2:])
        custom.save(tmp_path / "custom")
        RIM.load(tmp_path / "custom", score_fn=score_fn)


def test_resuming_from_a_checkpoint_equals_an_uninterrupted_fit(tmp_path, data):
    uninterrupted = small_rim()
    uninterrupted.fit(data, **(SMALL | dict(epochs=4)), checkpoints_directory=tmp_path, checkpoints=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint_000002", "checkpoint_000004"]
    resumed = RIM.load(tmp_path / "checkpoint_000002", score_fn=score_fn)
    resumed.fit(data, **SMALL)
    assert_same_tree(resumed.params, uninterrupted.params, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(resumed.history["loss"], uninterrupted.history["loss"], rtol=1e-6)


def test_a_checkpoint_folder_rebuilds_the_rim_keeps_the_newest_and_refuses_conflicts(tmp_path, data):
    rim = small_rim(T=5)
    rim.fit(data, **(SMALL | dict(epochs=5, n_iterations_in_epoch=1)), checkpoints_directory=tmp_path,
            checkpoints=1, models_to_keep=2)  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_000004", "checkpoint_000005"]
    rebuilt = RIM(checkpoints_directory=tmp_path, score_fn=score_fn)  # dimensions, model and T from the file
    assert rebuilt.T == 5 and rebuilt.model.hidden_units == 16
    np.testing.assert_array_equal(rebuilt.predict(data[0], *data[2:]), rim.predict(data[0], *data[2:]))
    with pytest.raises(ValueError, match="`T`"):
        RIM(checkpoints_directory=tmp_path, score_fn=score_fn, T=7)
    with pytest.raises(ValueError, match="`model`"):
        RIM(checkpoints_directory=tmp_path, score_fn=score_fn, model=MLP(N, hidden_units=8))
    with pytest.raises(ValueError, match="does not fit this RIM"):
        small_rim(T=2).fit(data, **SMALL, checkpoints_directory=tmp_path)


def test_a_damaged_checkpoint_is_refused(tmp_path, data):
    rim = small_rim()
    rim.fit(data, **SMALL)
    rim.save(tmp_path / "rim")
    raw = bytearray((tmp_path / "rim").read_bytes())
    raw[-5] ^= 0xFF
    (tmp_path / "rim").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="damaged"):
        RIM.load(tmp_path / "rim", score_fn=score_fn)


# ------------------------------------------------------------------------- EMA
def test_ema_weights_are_the_moving_average_of_the_optimisers_weights(data):
    decay, steps = 0.6, 6
    plain = small_rim()
    trajectory = [plain._initial_params(data[0][0], tuple(a[0] for a in data[2:]))]
    for _ in range(steps):  # one step per fit: the optimiser continues, so this is one trajectory
        plain.fit(data, **(SMALL | dict(epochs=1, n_iterations_in_epoch=1)), key=jax.random.key(3 + _))
        trajectory.append(plain.params)
    averaged = small_rim()
    for step in range(steps):
        averaged.fit(data, **(SMALL | dict(epochs=1, n_iterations_in_epoch=1)), ema_decay=decay,
                     key=jax.random.key(3 + step))  # fmt: skip
    expected = trajectory[0]
    for n, params in enumerate(trajectory[1:]):
        rate = min(decay, (1 + n) / (10 + n))
        expected = jax.tree.map(lambda a, p: rate * a + (1 - rate) * p, expected, params)
    assert_same_tree(averaged.params, expected, rtol=1e-5, atol=1e-6)
    assert_same_tree(averaged._state.w.params, trajectory[-1], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------- devices
@pytest.mark.parametrize("source", ["dataset", "simulator"])
def test_four_devices_equal_one(source, data):
    fit = SMALL | (dict(dataset=data) if source == "dataset" else dict(simulator=simulator))
    one, four = small_rim(), small_rim()
    one.fit(**fit, key=jax.random.key(4))
    four.fit(**fit, key=jax.random.key(4), devices=jax.devices()[:4])
    assert_same_tree(four.params, one.params, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(four.history["loss"], one.history["loss"], rtol=1e-5)
    with pytest.raises(ValueError, match="multiple of the 4 `devices`"):
        small_rim().fit(**(fit | dict(batch_size=6)), devices=jax.devices()[:4])


# ------------------------------------------------------------ iterable datasets
def test_an_iterable_of_batches_trains_like_the_same_batches_in_memory(data):
    batches = [tuple(a[i : i + 16] for a in data) for i in range(0, 64, 16)]
    streamed, in_memory = small_rim(), small_rim()
    streamed.fit(batches, epochs=2, learning_rate=1e-3, progress=False)
    assert len(streamed.history["loss"]) == 2  # an epoch is one pass over the 4 batches
    for _ in range(2):
        for batch in batches:  # the whole batch each step: draws without replacement only permute it
            in_memory.fit(batch, epochs=1, n_iterations_in_epoch=1, batch_size=16, learning_rate=1e-3,
                          progress=False)  # fmt: skip
    assert_same_tree(streamed.params, in_memory.params, rtol=1e-4, atol=1e-6)


def test_a_generator_that_runs_out_is_a_clear_error_and_keeps_the_progress(data):
    rim = small_rim()
    generator = (tuple(a[i : i + 8] for a in data) for i in range(0, 24, 8))
    with pytest.raises(ValueError, match="ran out after 3 batches"):
        rim.fit(generator, epochs=2, n_iterations_in_epoch=2, progress=False)
    assert rim.params is not None and len(rim.history["loss"]) == 2  # one full epoch and the partial one
    with pytest.raises(ValueError, match="`n_iterations_in_epoch`"):
        rim.fit(iter([tuple(data)]), epochs=1, progress=False)


# -------------------------------------------------------------------- adapters
class GradientStep(nnx.Module):
    """dx = a · score: a RIM that is gradient ascent with a learned step size."""

    channels = N

    def __init__(self):
        self.a = nnx.Param(jnp.asarray(0.05))

    def __call__(self, x, y, score, h):
        return self.a[...] * score, h

    def initialize_hidden_states(self, dimensions):
        return jnp.zeros(())


def stax_gradient_step():
    init_fn = lambda key, shapes: (shapes[:1], {"a": jnp.asarray(0.05)})
    apply_fn = lambda params, inputs: (params["a"] * inputs[2], inputs[3])
    return init_fn, apply_fn, N, lambda dimensions: jnp.zeros(())


@pytest.mark.parametrize("make_model", [GradientStep, stax_gradient_step], ids=["nnx", "stax"])
def test_nnx_and_stax_networks_run_the_maths_they_define(make_model, data):
    rim = RIM((), make_model(), score_fn=score_fn, T=5)
    y, x, A, σ = data
    z = jnp.zeros_like(x)
    for _ in range(5):
        z = z + 0.05 * jax.vmap(score_fn)(z, y, A, σ)
    np.testing.assert_allclose(rim.predict(y, A, σ), z, rtol=1e-5, atol=1e-6)
    before = float(rim.loss_fn(y, x, A, σ))
    rim.fit(data, epochs=1, n_iterations_in_epoch=20, batch_size=16, progress=False,
            optimizer=optax.adam(1e-2))  # fmt: skip
    assert float(rim.loss_fn(y, x, A, σ)) < before


# ---------------------------------------------------------------- progress bar
def test_the_progress_bar_shows_the_epoch_the_losses_and_patience_only_with_early_stopping(data, capsys):
    validation = tuple(a[:16] for a in data)
    small_rim().fit(data, validation=validation, **(SMALL | {"progress": True}))
    shown = capsys.readouterr().err
    assert "epoch=2" in shown and "loss=" in shown and "val_loss=" in shown and "patience" not in shown
    small_rim().fit(data, validation=validation, patience=1, **(SMALL | {"progress": True}))
    assert "patience=" in capsys.readouterr().err
