"""WSN / SoftNet masks and the optimizer transforms that freeze used weights (Kang et al. 2022,
2023): implemented in `netlab.nn.wsn` (where tasks can import them), re-exported here beside the
other optimizer-level methods."""

from netlab.nn.wsn import (  # noqa: F401
    TaskFreezeState,
    accumulate,
    freeze_finished_tasks,
    freeze_used,
    masked,
    masks,
    soft_mask,
    topc_mask,
)
