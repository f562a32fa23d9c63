"""Storage faults of checkpoint writes, as one line instead of a traceback per Orbax thread.

A failed write (disk full, quota, file size limit, permission, read-only or failing disk) reaches
the main thread from Orbax's save or wait; `storage_reason` recognises it (an OSError, or a
TensorStore error carrying `os_error_code`) so the caller can say in one line which checkpoint was
not written and which one is kept. Meanwhile Orbax logs every failed thread with a traceback and
asyncio reports every abandoned write (and a failed restore of a damaged checkpoint leaves Orbax's
read coroutines behind, which report again when the event loop closes); `quiet_background_errors`
filters exactly those.
"""

import errno
import logging
import os
import re
import sys


class SaveError(OSError):
    """Writing a checkpoint failed on the storage; the message is one line with the way out."""


_OS_CODE = re.compile(r"os_error_code='?(\d+)|\[Errno (\d+)\]")
STORAGE_ERRNOS = (
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EFBIG,
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.EIO,
)


def storage_reason(exc):
    """'No space left on device'-style reason if `exc` is a failed write to storage, else None."""
    code = exc.errno if isinstance(exc, OSError) and exc.errno else None
    if code is None:
        match = _OS_CODE.search(str(exc))
        code = int(match.group(1) or match.group(2)) if match else None
    if code in STORAGE_ERRNOS:
        return os.strerror(code)
    return None


class _OrbaxErrorFilter(logging.Filter):
    """Drop Orbax's per-thread ERROR logs (each with a traceback) of a failing write, and
    asyncio's "exception was never retrieved" for each of its abandoned writes; the error still
    reaches the main thread, which reports it in one line."""

    def filter(self, record):
        if record.levelno < logging.ERROR:
            return True
        if str(record.msg).startswith("[process="):
            return False
        exc = record.exc_info[1] if record.exc_info else None
        return not (
            exc is not None
            and "never retrieved" in str(record.msg)
            and storage_reason(exc) is not None
        )


def _unraisable_filter(previous):
    def hook(info):
        text = str(info.exc_value)
        if (isinstance(info.exc_value, RuntimeError) and "Event loop is closed" in text) or (
            isinstance(info.exc_value, ImportError) and "shutting down" in text
        ):
            return  # tensorstore callbacks of a failed / abandoned async save or restore
        code = getattr(info.object, "cr_code", None)
        if code is not None and "orbax" in code.co_filename:
            return  # a read of a damaged checkpoint, already reported in one line by the caller
        previous(info)

    hook.netlab = True
    return hook


def quiet_background_errors():
    """Install the log filter and the unraisable-exception filter (idempotent)."""
    for name in ("absl", "asyncio"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _OrbaxErrorFilter) for f in logger.filters):
            logger.addFilter(_OrbaxErrorFilter())
    if not getattr(sys.unraisablehook, "netlab", False):
        sys.unraisablehook = _unraisable_filter(sys.unraisablehook)
