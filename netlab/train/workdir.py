"""One run per workdir: `<workdir>/lock` names the run that writes it (host, pid, start time).

Two runs writing one workdir save the same step into one temporary folder and delete each other's
checkpoints, so the lead process of a run creates the lock atomically (O_CREAT | O_EXCL) before its
first write and removes it when the run ends; the other processes of a multi-host run count as
the same run (the loop shares the lead's verdict with them). A second run stops with one line that
names the holder. A lock left by a run that died on this host (kill -9, out of memory: its pid is
gone, or now belongs to a process started later) is taken over with a notice; a lock written on
another host cannot be checked from here, so the message says how to remove it by hand.
"""

import json
import os
import socket
import sys
import time
import uuid

from netlab.errors import UserError

NAME = "lock"


def _proc_start(pid: int):
    """Start time of `pid` in clock ticks since boot (Linux), to tell a reused pid; else None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(holder: dict) -> bool:
    pid = int(holder.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    started = holder.get("proc_start")
    now = _proc_start(pid)
    return started is None or now is None or now == started


def _describe(holder: dict) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("time", 0)))
    return f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, started {when}"


class WorkdirLock:
    def __init__(self, workdir: str):
        self.workdir = workdir
        self.path = os.path.join(workdir, NAME)
        self.token = None
        self.created_dir = False

    def _read(self, path=None):
        try:
            with open(path or self.path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def acquire(self, notice=None):
        """Take the lock or raise a one-line UserError naming its holder."""
        notice = notice or (lambda text: print(text, file=sys.stderr))
        self.created_dir = not os.path.isdir(self.workdir)
        os.makedirs(self.workdir, exist_ok=True)
        token = uuid.uuid4().hex
        me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "time": time.time(),
            "proc_start": _proc_start(os.getpid()),
            "token": token,
        }
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._read()
                if holder is None:
                    continue  # released meanwhile: try again
                if not holder:  # being written, or torn by a crash
                    if time.time() - _mtime(self.path) < 5:
                        time.sleep(0.5)
                        continue
                    holder = {"host": socket.gethostname(), "pid": -1}
                if holder.get("host") != socket.gethostname():
                    raise UserError(
                        f"{self.workdir} is in use by another run ({_describe(holder)}); "
                        f"use another --workdir, or, if that run is gone, delete "
                        f"{self.path}"
                    )
                if _alive(holder):
                    raise UserError(
                        f"{self.workdir} is in use by another run ({_describe(holder)}); "
                        "wait for it to finish or stop it, or use another --workdir"
                    )
                if self._take_over(holder):
                    notice(
                        f"notice: took over the lock of a run that is gone ({_describe(holder)})"
                    )
                continue
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(json.dumps(me))
            except OSError as e:
                os.remove(self.path)
                raise OSError(e.errno, e.strerror, self.path) from None
            self.token = token
            return self
        raise UserError(
            f"{self.workdir}: could not take the workdir lock {self.path} (another run "
            "keeps taking it); use another --workdir"
        )

    def _take_over(self, holder) -> bool:
        """Move a stale lock aside; False if another run replaced it meanwhile."""
        aside = f"{self.path}.stale-{os.getpid()}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        moved = self._read(aside)
        if moved and moved.get("token") != holder.get("token"):
            if not os.path.exists(self.path):  # a live run's fresh lock: put it back
                os.rename(aside, self.path)
            return False
        os.remove(aside)
        return True

    def release(self):
        if self.token is None:
            return
        holder = self._read()
        if holder and holder.get("token") == self.token:
            os.remove(self.path)
        self.token = None
        if self.created_dir:
            try:
                os.rmdir(self.workdir)  # a run that failed before writing anything
            except OSError:
                pass


def _mtime(path) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        return 0.0
