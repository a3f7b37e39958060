"""Ctrl-C held back over steps that must complete once started.

Python raises ``KeyboardInterrupt`` between any two bytecodes. Where a step
changes something that cannot be undone — an iterator hands over a batch, a
checkpoint replaces the previous one — an interrupt landing half-way would
leave the library's bookkeeping out of step with the world. Inside
:func:`deferred` the first Ctrl-C is recorded and raised as soon as the block
ends; a second one raises at once, so a stuck step can still be stopped.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold back the first SIGINT until the block ends (main thread, default handler only).

    Elsewhere (another thread, or a handler the user or a notebook installed) the
    block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler:  # ours (nested) or someone else's
        yield
        return
    received: list[int] = []

    def hold(signum, frame):
        if received:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        received.append(signum)

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt
