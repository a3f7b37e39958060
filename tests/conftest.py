"""Shared test setup: 4 CPU devices for multi-device tests (set before jax is imported)."""

import os

FLAG = "--xla_force_host_platform_device_count=4"
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FLAG}".strip()
os.environ.setdefault("MPLBACKEND", "Agg")
