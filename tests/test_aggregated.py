"""Aggregated IMNNs compute what the in-memory ones do, on 1 or 4 devices and across processes."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import KINDS, PROBLEM, aggregation_pair, common, compilations, multihost_results, source_kwargs

import imnn

WORKER = Path(__file__).with_name("multihost_worker.py")


def assert_trees_close(a, b, **tolerance):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tolerance)


def test_four_cpu_devices_are_available():
    assert len(jax.devices()) == 4, "tests/conftest.py should give 4 CPU devices"


@pytest.mark.parametrize("n_devices", [4, 1])
@pytest.mark.parametrize("kind", KINDS)
def test_aggregated_fit_matches_in_memory_fit(kind, n_devices):
    in_memory, aggregated = aggregation_pair(kind, n_devices)  # n_s = 203, n_d = 101: last batch padded
    for model in (in_memory, aggregated):
        model.fit(10.0, 0.1, rng=jax.random.key(3), min_iterations=8, max_iterations=8)
    assert set(in_memory.history) == set(aggregated.history)
    for name, values in in_memory.history.items():
        np.testing.assert_allclose(aggregated.history[name], values, rtol=1e-4, err_msg=name)
    assert_trees_close(aggregated.final_w, in_memory.final_w, rtol=1e-4, atol=1e-6)
    assert_trees_close(aggregated.best_w, in_memory.best_w, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(aggregated.F, in_memory.F, rtol=1e-4)
    key = jax.random.key(4)
    np.testing.assert_allclose(
        aggregated.get_summaries(key=key)[1], in_memory.get_summaries(key=key)[1], rtol=1e-4, atol=1e-6
    )
    batch = PROBLEM.simulations(jax.random.key(9), 5, 1).fiducial
    np.testing.assert_allclose(aggregated.get_estimate(batch), in_memory.get_estimate(batch), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_aggregated_fit_when_every_simulation_carries_derivatives(kind):
    in_memory, aggregated = aggregation_pair(kind, 4, n_s=60, n_d=60, n_per_device=4)
    for model in (in_memory, aggregated):
        model.fit(10.0, 0.1, rng=jax.random.key(3), min_iterations=4, max_iterations=4)
    np.testing.assert_allclose(aggregated.history["detF"], in_memory.history["detF"], rtol=1e-4)
    assert_trees_close(aggregated.final_w, in_memory.final_w, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["simulator", "gradient"])
def test_aggregated_second_fit_does_not_recompile(kind):
    _, aggregated = aggregation_pair(kind, 4)
    aggregated.fit(10.0, 0.1, rng=jax.random.key(1), min_iterations=3, max_iterations=3)
    with compilations() as compiled:
        aggregated.fit(5.0, 0.2, rng=jax.random.key(2), min_iterations=6, max_iterations=6)
    assert compiled == []


def test_aggregated_data_is_sharded_across_the_devices():
    _, aggregated = aggregation_pair("gradient", 4)
    fiducial_batches = aggregated._data[0][0]  # (n_batches, 4 × n_per_device, *input_shape)
    assert fiducial_batches.shape[:2] == (4, 28)
    assert {shard.data.shape[1] for shard in fiducial_batches.addressable_shards} == {7}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_devices(tmp_path):
    coordinator = f"127.0.0.1:{_free_port()}"
    flags = os.environ.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=4", "")
    env = {**os.environ, "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    outputs = [tmp_path / f"process{i}.npz" for i in range(2)]
    logs = [open(tmp_path / f"process{i}.log", "w") for i in range(2)]
    processes = [
        subprocess.Popen([sys.executable, str(WORKER), coordinator, "2", str(i), str(outputs[i])],
                         env=env, stdout=logs[i], stderr=subprocess.STDOUT)
        for i in range(2)
    ]  # fmt: skip
    deadline = time.monotonic() + float(os.environ.get("IMNN_MULTIHOST_DEADLINE", 240))  # longer under stress
    try:
        single = multihost_results()  # while they run: the same 4 devices' worth of work in this one process
        while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0) for p in processes):
                break
            time.sleep(0.2)
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
            p.wait()
        for log in logs:
            log.close()
    for i, p in enumerate(processes):
        assert p.returncode == 0, (tmp_path / f"process{i}.log").read_text()[-3000:]
    first, second = (dict(np.load(out)) for out in outputs)
    assert first.keys() == second.keys() == single.keys()
    for name, values in single.items():
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
        np.testing.assert_allclose(first[name], values, rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(host="cpu"), "`host`"),
        (dict(devices=jax.devices()[0]), "`devices`"),
        (dict(devices=[]), "`devices`"),
        (dict(devices=["cpu:0"]), "`devices`"),
        (dict(devices=[jax.devices()[0]] * 2), "`devices`"),
        (dict(n_per_device=0), "`n_per_device`"),
        (dict(n_per_device=-4), "`n_per_device`"),
        (dict(n_per_device=2.5), "`n_per_device`"),
    ],
)
def test_bad_aggregation_arguments_name_the_argument(overrides, match):
    sims = PROBLEM.simulations(jax.random.key(1), 100, 50)
    aggregation = dict(host=jax.devices()[0], devices=jax.devices(), n_per_device=5) | overrides
    with pytest.raises((TypeError, ValueError), match=match):
        imnn.AggregatedGradientIMNN(**common(), **source_kwargs("gradient", sims), **aggregation)


def test_compatibility_flags_are_checked():
    sims = PROBLEM.simulations(jax.random.key(1), 100, 50)
    aggregation = dict(host=jax.devices()[0], devices=jax.devices(), n_per_device=5)
    with pytest.raises(TypeError, match="`cache`"):
        imnn.AggregatedGradientIMNN(**common(), **source_kwargs("gradient", sims), **aggregation, cache="yes")
    with pytest.raises(TypeError, match="`prefetch`"):
        imnn.AggregatedGradientIMNN(**common(), **source_kwargs("gradient", sims), **aggregation, prefetch=1.5)
