"""Multi-device equality tests repeated while the CPU is saturated by busy processes.

A busy machine changes how XLA:CPU schedules the devices' shares of a program; a
design in which collectives from different programs can interleave then aborts
(``Fatal Python error: Aborted`` in ``AllReduce``) or hangs. Each repetition runs
the aggregated, dataset and multi-host equality tests in a fresh pytest process
beside ``IMNN_STRESS_BUSY`` spinning processes; every repetition must pass.

Environment: ``IMNN_STRESS_REPEATS`` (default 3) and ``IMNN_STRESS_BUSY`` (default 4).
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPEATS = int(os.environ.get("IMNN_STRESS_REPEATS", "3"))
BUSY = int(os.environ.get("IMNN_STRESS_BUSY", "4"))
TESTS = [
    "tests/test_datasets.py::test_dataset_fit_matches_in_memory_fit",
    "tests/test_datasets.py::test_ctrl_c_while_reading_keeps_the_progress_and_the_next_fit_stays_aligned",
    "tests/test_aggregated.py::test_aggregated_fit_matches_in_memory_fit",
    "tests/test_aggregated.py::test_two_processes_match_one_process_with_the_same_devices",
]
LIMIT_S = 900  # one repetition; a hang is a failure, not a stuck CI


def _busy_processes(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _run_once(log: Path) -> tuple[int | None, float]:
    started = time.monotonic()
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *TESTS],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "IMNN_MULTIHOST_DEADLINE": str(LIMIT_S // 2)},  # slow is not stuck
        )  # fmt: skip
        try:
            code = process.wait(timeout=LIMIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            code = None
    return code, time.monotonic() - started


def _essence(text: str) -> str:
    """What a failed repetition printed that matters: a fatal error's first lines, then the end."""
    fatal = text.find("Fatal Python error")
    head = text[fatal : fatal + 600] + "\n…\n" if fatal >= 0 else ""
    return head + text[-2500:]


def _describe(code: int | None) -> str:
    if code is None:
        return f"hung (killed after {LIMIT_S} s)"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


def test_multi_device_equality_tests_pass_with_the_cpu_saturated(tmp_path):
    failures = []
    busy = _busy_processes(BUSY)
    try:
        for repeat in range(REPEATS):
            log = tmp_path / f"run{repeat}.log"
            code, seconds = _run_once(log)
            print(f"repetition {repeat + 1}/{REPEATS}: {_describe(code)} in {seconds:.0f} s", flush=True)
            if code != 0:
                failures.append(f"repetition {repeat + 1}: {_describe(code)}\n{_essence(log.read_text())}")
    finally:
        for process in busy:
            process.kill()
            process.wait()
    assert not failures, f"{len(failures)} of {REPEATS} repetitions failed under load:\n" + "\n".join(failures)
