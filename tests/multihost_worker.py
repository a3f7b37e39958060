"""One process of the multi-host test: ``python multihost_worker.py COORDINATOR N_PROCESSES PROCESS_ID OUT``.

Initialises ``jax.distributed``, fits the aggregated IMNNs of
``helpers.aggregation_pair`` over every process's devices and saves the
results to ``OUT`` (an ``.npz``). Any failure exits at once with status 1, so a
crashed process cannot leave its peers waiting on a collective.
"""

import os
import sys
import traceback


def main(coordinator: str, n_processes: int, process_id: int, out: str) -> None:
    import jax

    if n_processes > 1:  # before any other JAX call
        jax.distributed.initialize(coordinator, n_processes, process_id, initialization_timeout=60)
    sys.path.insert(0, os.path.dirname(__file__))
    import numpy as np
    from helpers import multihost_results

    np.savez(out, **multihost_results())


if __name__ == "__main__":
    try:
        main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        os._exit(1)
