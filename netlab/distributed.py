"""Multi-process initialisation and the lead-process rule.

- Explicit: NETLAB_COORDINATOR=host:port, NETLAB_NUM_PROCESSES=N, NETLAB_PROCESS_ID=i (local
  multi-process runs and custom clusters).
- TPU VMs, SLURM and Open MPI: `jax.distributed.initialize()` with no arguments; JAX detects the
  cluster itself (on SLURM, one task per GPU with every GPU visible to every task).
- Anything else: a single process, nothing to do.
Only the lead process (index 0) writes config, metrics and pictures; every process writes its own
checkpoint shards.
"""

import os

import jax

_initialized = False


def _cluster_detected() -> bool:
    if os.environ.get("NETLAB_NO_DISTRIBUTED"):
        return False
    if "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return True
    if "OMPI_COMM_WORLD_SIZE" in os.environ and int(os.environ["OMPI_COMM_WORLD_SIZE"]) > 1:
        return True
    return bool(
        os.environ.get("TPU_WORKER_HOSTNAMES") and "," in os.environ["TPU_WORKER_HOSTNAMES"]
    )


def initialize() -> None:
    global _initialized
    if _initialized:
        return
    coordinator = os.environ.get("NETLAB_COORDINATOR")
    if coordinator:
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=int(os.environ["NETLAB_NUM_PROCESSES"]),
            process_id=int(os.environ["NETLAB_PROCESS_ID"]),
            initialization_timeout=int(os.environ.get("NETLAB_INIT_TIMEOUT", "120")),
            heartbeat_timeout_seconds=int(os.environ.get("NETLAB_HEARTBEAT_TIMEOUT", "20")),
        )
    elif _cluster_detected():
        jax.distributed.initialize()
    _initialized = True


def is_lead() -> bool:
    return jax.process_index() == 0


def all_processes(ok: bool) -> bool:
    """True only if `ok` is True on every process (a collective: every process must call it)."""
    if jax.process_count() == 1:
        return bool(ok)
    import numpy as np
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.asarray([bool(ok)]))))
