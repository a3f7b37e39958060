"""imnn.TFRecords with real TensorFlow: shards on disk, reference-style tf.data pipelines, and fits
that equal the in-memory ones on the same simulations."""

import functools

import jax
import numpy as np
import optax
import pytest
import tensorflow as tf
from helpers import FIT, PROBLEM, NoOutputBias, common, source_kwargs

import imnn

N_S, N_D, N_PARAMS, N_DEVICES, N_PER_DEVICE = 204, 100, 2, 2, 7
SHAPE = PROBLEM.input_shape


@pytest.fixture(scope="module")
def sims():
    return jax.tree.map(np.asarray, PROBLEM.simulations(jax.random.key(1), N_S, N_D))


def files(directory, name):
    return sorted(str(p) for p in directory.glob(f"{name}_*.tfrecords"))


def read_all(paths, parser):
    return np.stack(list(tf.data.TFRecordDataset(paths).map(parser).as_numpy_iterator()))


def test_shards_have_the_reference_names_and_size_and_hold_the_simulations(tmp_path, sims):
    writer = imnn.TFRecords(record_size=0.004)  # 4 kB shards
    paths = writer.write_record(N_S, lambda seed: sims.fiducial[seed], directory=tmp_path)
    assert writer.input_shape == SHAPE
    assert paths == files(tmp_path, "fiducial") and len(paths) > 2
    assert [p.rsplit("/", 1)[1] for p in paths[:2]] == ["fiducial_00000.tfrecords", "fiducial_00001.tfrecords"]
    example_bytes = 100  # 40 bytes of float32 data, the seed, the protobuf and TFRecord framing
    sizes = [(tmp_path / p).stat().st_size for p in paths]
    assert all(4000 < size <= 4000 + example_bytes for size in sizes[:-1]) and sizes[-1] <= 4000 + example_bytes
    np.testing.assert_array_equal(read_all(paths, writer.parser), sims.fiducial)
    seeds = tf.data.TFRecordDataset(paths).map(
        lambda e: tf.io.parse_single_example(e, {"seed": tf.io.FixedLenFeature([], tf.int64)})["seed"]
    )
    assert list(seeds.as_numpy_iterator()) == list(range(N_S))


def test_validation_names_start_and_derivative_records(tmp_path, sims):
    writer = imnn.TFRecords(input_shape=SHAPE)
    paths = writer.write_record(5, lambda seed: sims.fiducial[seed], validation=True, directory=tmp_path, start=2)
    assert paths == [str(tmp_path / "validation_fiducial_00000.tfrecords")]
    np.testing.assert_array_equal(read_all(paths, writer.parser), sims.fiducial[2:5])
    paths = writer.write_record(
        3, lambda seed, derivative, parameter: sims.numerical_derivative[seed, derivative, parameter],
        fiducial=False, n_params=N_PARAMS, directory=tmp_path,
    )  # fmt: skip
    flat = sims.numerical_derivative[:3].reshape((-1, *SHAPE))  # seed, then below/above, then parameter
    np.testing.assert_array_equal(read_all(paths, writer.parser), flat)
    blocks = writer.write_record(3, lambda seed: sims.numerical_derivative[seed], directory=tmp_path, filename="b")
    parser = functools.partial(writer.numerical_derivative_parser, n_params=N_PARAMS)
    np.testing.assert_array_equal(read_all(blocks, parser), sims.numerical_derivative[:3])


def test_bad_writer_arguments_are_clear(tmp_path):
    writer = imnn.TFRecords()
    with pytest.raises(TypeError, match=r"get_simulation\(seed, derivative, parameter\)"):
        writer.write_record(2, lambda seed: np.zeros(3), fiducial=False, n_params=2, directory=tmp_path)
    with pytest.raises(ValueError, match="`n_params`"):
        writer.write_record(2, lambda s, d, p: np.zeros(3), fiducial=False, directory=tmp_path)
    with pytest.raises(ValueError, match="`input_shape`"):
        writer.parser(tf.constant(b""))
    with pytest.raises(ValueError, match="`record_size`"):
        imnn.TFRecords(record_size=0)


def reference_pipeline(paths, parser, start, count):
    return tf.data.TFRecordDataset(paths).map(parser).skip(start).take(count)


def test_dataset_gradient_imnn_from_tfrecords_equals_gradient_imnn(tmp_path, sims):
    writer = imnn.TFRecords(record_size=0.004)
    writer.write_record(N_S, lambda seed: sims.fiducial[seed], directory=tmp_path)
    writer.write_record(N_D, lambda seed: sims.derivative[seed], directory=tmp_path, filename="derivative")
    fiducial, derivative = files(tmp_path, "fiducial"), files(tmp_path, "derivative")
    derivative_parser = functools.partial(writer.derivative_parser, n_params=N_PARAMS)
    share, rest = N_D // N_DEVICES, (N_S - N_D) // N_DEVICES
    main = [
        tf.data.Dataset.zip((
            reference_pipeline(fiducial, writer.parser, i * share, share),
            reference_pipeline(derivative, derivative_parser, i * share, share),
        )).batch(N_PER_DEVICE).repeat().as_numpy_iterator()
        for i in range(N_DEVICES)
    ]  # fmt: skip
    remaining = [
        reference_pipeline(fiducial, writer.parser, N_D + i * rest, rest).batch(N_PER_DEVICE).repeat()
        .as_numpy_iterator()
        for i in range(N_DEVICES)
    ]  # fmt: skip
    kwargs = common(n_s=N_S, n_d=N_D, model=NoOutputBias(), optimiser=optax.adam(1e-2))
    devices = jax.devices()[:N_DEVICES]
    dataset = imnn.IMNN(**kwargs, main=main, remaining=remaining, host=jax.devices("cpu")[0], devices=devices,
                        n_per_device=N_PER_DEVICE)  # fmt: skip
    assert isinstance(dataset, imnn.DatasetGradientIMNN)
    in_memory = imnn.GradientIMNN(**kwargs, **source_kwargs("gradient", sims))
    assert_same_fits(dataset, in_memory)


def test_dataset_numerical_gradient_imnn_from_tfrecords_equals_numerical_gradient_imnn(tmp_path, sims):
    writer = imnn.TFRecords(record_size=0.004, input_shape=SHAPE)
    writer.write_record(N_S, lambda seed: sims.fiducial[seed], directory=tmp_path)
    writer.write_record(
        N_D, lambda seed, derivative, parameter: sims.numerical_derivative[seed, derivative, parameter],
        fiducial=False, n_params=N_PARAMS, directory=tmp_path,
    )  # fmt: skip
    fiducial_share, derivative_share = N_S // N_DEVICES, N_D * 2 * N_PARAMS // N_DEVICES

    def per_device(name, share):
        return [
            reference_pipeline(files(tmp_path, name), writer.parser, i * share, share)
            .batch(N_PER_DEVICE).repeat().as_numpy_iterator()
            for i in range(N_DEVICES)
        ]  # fmt: skip

    kwargs = common(n_s=N_S, n_d=N_D, model=NoOutputBias(), optimiser=optax.adam(1e-2))
    dataset = imnn.DatasetNumericalGradientIMNN(
        **kwargs, fiducial=per_device("fiducial", fiducial_share),
        derivative=per_device("derivative", derivative_share), δθ=sims.δθ,
        host=jax.devices()[0], devices=jax.devices()[:N_DEVICES], n_per_device=N_PER_DEVICE,
    )  # fmt: skip
    in_memory = imnn.NumericalGradientIMNN(**kwargs, **source_kwargs("numerical", sims))
    assert_same_fits(dataset, in_memory)


def assert_same_fits(dataset, in_memory):
    for model in (dataset, in_memory):
        model.fit(**FIT, max_iterations=6)
    np.testing.assert_allclose(dataset.history["detF"], in_memory.history["detF"], rtol=1e-4)
    for a, b in zip(jax.tree.leaves(dataset.final_w), jax.tree.leaves(in_memory.final_w)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
