"""``python -m netlab.data list | fetch NAME... | verify [NAME...]``.

- ``list``: every dataset with its state (cached / missing / corrupt; sizes only, fast) and where.
- ``fetch NAME... [--dir DIR]``: download and verify (``all`` for every dataset); into the cache,
  or into ``DIR`` to build a data folder for ``NETLAB_DATA_DIR`` (an offline cluster's workers).
- ``verify [NAME...]``: re-hash every present file; exit status 1 when one is corrupt.

Resolution and environment variables: :mod:`netlab.data.registry` and docs/data.md.
"""

from __future__ import annotations

import argparse
import sys

from netlab.data import registry
from netlab.errors import UserError


def _summary(name: str, rows: list) -> str:
    states = [s for _, s, _ in rows]
    folders = sorted({str(p)[: -len(rel)].rstrip("/") for rel, s, p in rows if s != "missing"})
    if "corrupt" in states:
        bad = [f"{p} ({s})" for _, s, p in rows if s == "corrupt"]
        return f"{name:16s} corrupt   {', '.join(bad)}"
    if "missing" in states:
        n = states.count("missing")
        return f"{name:16s} missing   {n} of {len(rows)} files (python -m netlab.data fetch {name})"
    note = " (no checksum pinned)" if "unverified" in states else ""
    return f"{name:16s} cached    {', '.join(folders)}{note}"


def _names(given: list) -> list:
    if not given or given == ["all"]:
        return registry.names()
    for n in given:
        registry.get(n)
    return given


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m netlab.data", description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default="", help="look here first (as config.data.data_dir)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="every dataset and its state")
    f = sub.add_parser("fetch", help="download and verify datasets")
    f.add_argument("names", nargs="+", help="dataset names, or all")
    f.add_argument("--dir", default=None, help="download into this data folder, not the cache")
    v = sub.add_parser("verify", help="re-check the SHA-256 of every present file")
    v.add_argument("names", nargs="*", help="dataset names (default: all)")
    args = p.parse_args(argv)
    data_dir = args.data_dir or None
    try:
        if args.cmd == "list":
            print(f"cache: {registry.cache_dir()}")
            for name in registry.names():
                print(_summary(name, registry.status(name, data_dir)))
            return 0
        if args.cmd == "fetch":
            for name in _names(args.names):
                paths = registry.fetch(name, args.dir, data_dir)
                print(f"{name:16s} ok        {len(paths)} files")
            return 0
        corrupt = False
        for name in _names(args.names):
            rows = registry.status(name, data_dir, deep=True)
            corrupt |= any(s == "corrupt" for _, s, _ in rows)
            print(_summary(name, rows))
        return 1 if corrupt else 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
