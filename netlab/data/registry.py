"""Where a dataset's files come from: the dataset registry and its resolution order.

Every file a loader reads goes through :func:`locate` (``planetoid/ind.cora.x`` of ``cora``).
The first folder that holds it wins, in this order:

1. ``config.data.data_dir`` (the ``data_dir`` argument), a folder with the data layout;
2. ``$NETLAB_DATA_DIR``, the same, e.g. a shared copy on an offline cluster;
3. the download cache, ``$NETLAB_CACHE`` or ``~/.cache/netlab/datasets``;
4. else it is downloaded into the cache: from ``$NETLAB_DATASET_MIRROR`` (a base URL serving a
   data folder with the same layout) first, then from the catalog's canonical URLs.

A file found in 1. or 2. that fails its SHA-256 is refused (the folder is the user's to fix); a
corrupt cached file is downloaded again. ``$NETLAB_OFFLINE=1`` turns downloads off (the test suite
sets it). Every missing-data error, whichever loader asks, is the one line of
:func:`missing_message`: dataset, file, the URL that failed and how to place the file by hand.
"""

from __future__ import annotations

import difflib
import logging
import os
import pathlib
from typing import Optional

from netlab.data import catalog, download
from netlab.errors import UserError

DATA_DIR_ENV = "NETLAB_DATA_DIR"
CACHE_ENV = "NETLAB_CACHE"
MIRROR_ENV = "NETLAB_DATASET_MIRROR"
OFFLINE_ENV = "NETLAB_OFFLINE"
DOCS = "docs/data.md"

log = logging.getLogger("netlab.data")
_DATASETS: dict = {d.name: d for d in catalog.builtin()}


def register(dataset: catalog.Dataset, *, replace: bool = False) -> catalog.Dataset:
    """Add a dataset (a later issue's, or a test's tiny one); refuses to shadow one silently."""
    if dataset.name in _DATASETS and not replace:
        raise ValueError(f"dataset {dataset.name!r} is already registered")
    _DATASETS[dataset.name] = dataset
    return dataset


def unregister(name: str) -> None:
    _DATASETS.pop(name, None)


def names() -> list:
    return list(_DATASETS)


def get(name: str) -> catalog.Dataset:
    if name not in _DATASETS:
        close = difflib.get_close_matches(name, names(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(names())}{hint}")
    return _DATASETS[name]


def file_of(name: str, rel: str) -> catalog.File:
    for f in get(name).files:
        if f.rel == rel:
            return f
    raise UserError(f"dataset {name!r} has no file {rel!r} in the catalog")


def cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get(CACHE_ENV) or "~/.cache/netlab/datasets").expanduser()


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").lower() not in ("", "0", "false", "no")


def search_dirs(data_dir=None) -> list:
    """``[(label, folder)]`` in resolution order; a named folder that does not exist is an error
    (a typo should not silently fall back to downloading)."""
    cache = cache_dir()
    out = []
    for label, value in (
        ("config.data.data_dir", data_dir),
        (DATA_DIR_ENV, os.environ.get(DATA_DIR_ENV)),
    ):
        if not value:
            continue
        folder = pathlib.Path(value).expanduser()
        if folder.resolve() == cache.resolve():
            continue
        if not folder.is_dir():
            raise UserError(
                f"{label}={str(value)!r} is not a folder; point config.data.data_dir or "
                f"{DATA_DIR_ENV} at a data folder (layout in {DOCS}) or unset it to use the "
                f"cache {cache}"
            )
        out.append((label, folder))
    return out + [("cache", cache)]


def urls(f: catalog.File) -> list:
    """The mirror's URL for ``f`` (when ``$NETLAB_DATASET_MIRROR`` is set), then the canonical."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    return ([f"{mirror.rstrip('/')}/{f.rel}"] if mirror else []) + [f.url]


def missing_message(name: str, rel: str, dest: pathlib.Path, why: str) -> str:
    """The one wording of every missing-data error."""
    return (
        f"dataset {name!r}: missing data file {rel}: {why}; place the file by hand at {dest} "
        f"(or at <folder>/{rel} with config.data.data_dir or {DATA_DIR_ENV} naming <folder>), "
        f"or run `python -m netlab.data fetch {name}` where the network is reachable "
        f"(see {DOCS})"
    )


def corrupt_message(name: str, path: pathlib.Path, why: str, f: catalog.File) -> str:
    return (
        f"dataset {name!r}: checksum mismatch for {path} ({why}): the file is corrupt or "
        f"modified; restore it from {f.url} or delete it to download a fresh copy"
    )


def fetch_file(name: str, f: catalog.File, folder: pathlib.Path) -> pathlib.Path:
    """``folder/f.rel``, downloaded and verified unless a good copy is already there."""
    dest = folder / f.rel
    tried = urls(f)
    if offline():
        if dest.is_file() and download.check_file(dest, f.sha256, f.size) is None:
            return dest
        why = f"downloads are off ({OFFLINE_ENV}=1), not fetched from {tried[0]}"
        raise UserError(missing_message(name, f.rel, dest, why))
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(missing_message(name, f.rel, dest, f"cannot create the folder ({e})"))
    failures = []
    with download.file_lock(dest):
        if dest.is_file():
            bad = download.check_file(dest, f.sha256, f.size)
            if bad is None:
                return dest  # another process finished it while we waited for the lock
            log.warning("dataset %r: removing corrupt %s (%s)", name, dest, bad)
            dest.unlink()
        for url in tried:
            try:
                download.download(url, dest, f.sha256, f.size, desc=f"{name}: {f.rel}")
                return dest
            except download.DownloadError as e:
                failures.append(f"{url} ({e})")
                if url != tried[-1]:
                    log.warning("dataset %r: %s failed (%s); trying the next URL", name, url, e)
    why = "download failed, nothing kept: " + "; ".join(failures)
    raise UserError(missing_message(name, f.rel, dest, why))


def locate(name: str, rel: str, data_dir=None) -> pathlib.Path:
    """The verified local path of ``rel`` of dataset ``name``, downloading it if needed."""
    f = file_of(name, rel)
    for label, folder in search_dirs(data_dir):
        path = folder / rel
        if not path.is_file():
            continue
        bad = download.check_file(path, f.sha256, f.size)
        if bad is None:
            return path
        if label != "cache":
            raise UserError(corrupt_message(name, path, bad, f))
    return fetch_file(name, f, cache_dir())


def closure(names_: list) -> list:
    """Dataset names plus the datasets they require, each once, requirements first."""
    out: list = []

    def add(n):
        for r in get(n).requires:
            add(r)
        if n not in out:
            out.append(n)

    for n in names_:
        add(n)
    return out


def fetch(name: str, into: Optional[pathlib.Path] = None, data_dir=None) -> list:
    """Make every file of ``name`` (and what it requires) available: into ``into`` when given
    (e.g. a shared folder for ``NETLAB_DATA_DIR``), else wherever :func:`locate` finds or puts
    it. Returns the paths."""
    paths = []
    for n in closure([name]):
        for f in get(n).files:
            if into is not None:
                paths.append(fetch_file(n, f, pathlib.Path(into).expanduser()))
            else:
                paths.append(locate(n, f.rel, data_dir))
    return paths


def status(name: str, data_dir=None, deep: bool = False) -> list:
    """``[(rel, state, path)]`` with state cached | missing | corrupt | unverified; ``deep``
    hashes every file (``verify``), else sizes only (``list``)."""
    dirs = search_dirs(data_dir)
    out = []
    for f in get(name).files:
        state, where = "missing", dirs[-1][1] / f.rel
        for _, folder in dirs:
            path = folder / f.rel
            if path.is_file():
                bad = download.check_file(path, f.sha256, f.size, deep=deep)
                state = "corrupt" if bad else ("unverified" if f.sha256 is None else "cached")
                where = path
                break  # as locate: the first folder holding the file decides
        out.append((f.rel, state, where))
    return out
