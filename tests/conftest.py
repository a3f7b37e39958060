"""Shared test setup: 4 CPU devices for multi-device tests (set before jax is imported)."""

import os

FLAG = "--xla_force_host_platform_device_count=4"
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FLAG}".strip()
os.environ.setdefault("MPLBACKEND", "Agg")


import signal  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def ctrl_c_raises_keyboard_interrupt():
    """Tests send real SIGINTs; a shell starting pytest in the background makes Python ignore them."""
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
