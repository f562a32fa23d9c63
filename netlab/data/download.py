"""Downloads that cannot corrupt a data folder.

A file is streamed into a temporary file in its destination folder (so the final rename never
crosses file systems), its size and SHA-256 are checked, and only then is it renamed over the
destination (``os.replace``, atomic on POSIX). Any failure -- an HTTP error, a connection that
closes mid-file (``Content-Length`` not met), a short file, a wrong hash -- deletes the temporary
file, so a reader sees either no file or a verified one, never a partial one.

Concurrent processes (pytest-xdist workers, the hosts of a multi-host job) take an exclusive
``fcntl`` lock on ``.<name>.lock`` beside the destination; the first downloads, the others wait and
then find the verified file. The holder removes the lock file when done; a waiter that acquired a
lock on an already removed lock file notices (its inode is no longer the path's) and locks again,
the usual unlink-safe ``flock`` pattern. Files of ``PROGRESS_MIN_BYTES`` or more show a tqdm bar.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import os
import pathlib
import tempfile
import urllib.error
import urllib.request
from typing import Optional

CHUNK = 1 << 16
PROGRESS_MIN_BYTES = 1 << 20
TIMEOUT_ENV = "NETLAB_DOWNLOAD_TIMEOUT"  # seconds without data before a download is abandoned


class DownloadError(Exception):
    """One URL failed; the message is a short reason (the caller names dataset, file and URL)."""


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_file(path, sha256: Optional[str], size: Optional[int], deep: bool = True):
    """None when ``path`` has the expected size (and, if ``deep``, SHA-256); else the reason."""
    got = os.path.getsize(path)
    if size is not None and got != size:
        return f"{got} bytes, expected {size}"
    if deep and sha256 is not None:
        digest = sha256_file(path)
        if digest != sha256:
            return f"sha256 {digest[:12]}..., expected {sha256[:12]}..."
    return None


@contextlib.contextmanager
def file_lock(dest: pathlib.Path):
    """Exclusive lock for writing ``dest`` across processes on this file system."""
    lock = dest.with_name(f".{dest.name}.lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = os.fstat(fd)
            try:
                now = os.stat(lock)
                same = (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)  # the previous holder removed this lock file: lock the current one
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)


def _progress(total: Optional[int], desc: str):
    from tqdm import tqdm

    show = total is None or total >= PROGRESS_MIN_BYTES
    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=not show, leave=False)


def download(
    url: str, dest: pathlib.Path, sha256: Optional[str], size: Optional[int], desc: str = ""
) -> None:
    """Fetch ``url`` into ``dest`` (verified, atomic) or raise :class:`DownloadError`, leaving
    nothing behind. The caller holds :func:`file_lock` for ``dest``."""
    timeout = float(os.environ.get(TIMEOUT_ENV) or 60)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        h, n, length = hashlib.sha256(), 0, None
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    header = resp.headers.get("Content-Length")
                    length = int(header) if header else None
                    read = getattr(resp, "read1", resp.read)  # what has arrived, not CHUNK
                    with _progress(size or length, desc or dest.name) as bar:
                        while chunk := read(CHUNK):
                            out.write(chunk)
                            h.update(chunk)
                            n += len(chunk)
                            bar.update(len(chunk))
            except urllib.error.HTTPError as e:
                raise DownloadError(f"HTTP {e.code} {e.reason}") from None
            except urllib.error.URLError as e:
                raise DownloadError(f"unreachable: {e.reason}") from None
            except (OSError, http.client.HTTPException) as e:
                raise DownloadError(
                    f"connection failed after {n} bytes ({type(e).__name__}: {e})"
                ) from None
            out.flush()
            os.fsync(out.fileno())
        if length is not None and n != length:
            raise DownloadError(f"connection closed after {n} of {length} bytes")
        if size is not None and n != size:
            raise DownloadError(f"got {n} bytes, expected {size} (truncated or a different file)")
        digest = h.hexdigest()
        if sha256 is not None and digest != sha256:
            raise DownloadError(
                f"sha256 {digest[:12]}..., expected {sha256[:12]}... (corrupt or changed file)"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
