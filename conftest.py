"""Setup shared by every test directory (loaded before their own conftest.py)."""

import os

# Most of the suites' time was XLA compiling the same small programs again for every
# freshly built model; a compilation cache shared by the session's tests compiles each
# program once (the executables are the same, so no test's behaviour changes). The
# environment reaches the processes tests start (multi-host workers, notebook kernels,
# stress repetitions), so they share it too; it is deleted when the session ends.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    CACHE = tempfile.mkdtemp(prefix="imnn-tests-xla-cache-")
    atexit.register(shutil.rmtree, CACHE, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = CACHE
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
