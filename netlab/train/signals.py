"""SIGINT (Ctrl-C) and SIGTERM (preemption) become "stop at the next step, saving it".

The CLI installs the handlers first thing, before its slow imports (JAX, the task's data), so no
signal is lost during start-up. The handler only sets a flag (an exception raised inside a signal
handler can land in a garbage-collection callback, where Python swallows it); the loop polls it:

- before training started, `check()` raises `Interrupted` (nothing new to save);
- during training, the loop saves the current step and returns; the CLI exits 0 after SIGTERM
  (the preemption contract) and 130 after SIGINT (the shell's "interrupted");
- a second Ctrl-C raises KeyboardInterrupt (quit now without saving), a third one kills at once.

With several processes JAX's preemption service owns SIGTERM (`jax.distributed.initialize`
replaces this handler), so that every process stops at one agreed step; a SIGINT is forwarded to it
as a SIGTERM to this process (`forward_to_jax`). This module imports nothing heavy.
"""

import os
import signal
import threading

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 0}


class Interrupted(Exception):
    """Stopped by a signal before training started: nothing to save."""

    def __init__(self, signum):
        self.signum = signum
        name = signal.Signals(signum).name
        super().__init__(
            f"{name} during start-up; nothing was written since the last "
            "checkpoint; rerun the same command to continue"
        )

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 1)


class Stop:
    """Which signal (if any) asked the run to stop; see the module docstring."""

    def __init__(self):
        self.signum = None
        self.interrupts = 0
        self.previous = {}
        self.forward_to_jax = False

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 0)

    def _handler(self, signum, frame):
        if self.signum is None:
            self.signum = signum
        if signum != signal.SIGINT:
            return
        self.interrupts += 1
        if self.interrupts == 1:
            os.write(
                2,
                b"\ninterrupt: stopping at the next step, which is saved "
                b"(Ctrl-C again: quit without saving)\n",
            )
            if self.forward_to_jax:
                os.kill(os.getpid(), signal.SIGTERM)
        else:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            raise KeyboardInterrupt

    def install(self) -> bool:
        """Install the handlers (main thread only); False if they already are or cannot be."""
        if self.previous or threading.current_thread() is not threading.main_thread():
            return False
        for signum in EXIT_CODES:
            self.previous[signum] = signal.signal(signum, self._handler)
        return True

    def uninstall(self):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self.previous = {}
        self.forward_to_jax = False

    def reset(self):
        self.signum, self.interrupts = None, 0

    def check(self):
        """Raise `Interrupted` if a signal arrived (call between start-up phases)."""
        if self.signum is not None:
            raise Interrupted(self.signum)


STOP = Stop()
