"""The real download path against a real HTTP server on 127.0.0.1: verified atomic downloads into
an empty cache, the mirror before the canonical URL, every failure leaving no file behind and
giving one line, two processes fetching at once, and the ``python -m netlab.data`` commands."""

import hashlib
import os
import pathlib
import re
import subprocess
import sys

import pytest

from netlab.data import __main__ as cli
from netlab.data import catalog, registry
from netlab.errors import UserError
from tests.data.server import serve

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAYLOAD = bytes(range(256)) * 64  # 16 KiB: tiny, but many reads of the 64 KiB chunk loop's size
NAME, REL = "tiny-test", "tiny/blob.bin"
OFFLINE_COPY = os.environ.get("NETLAB_DATA_DIR", "")  # read before the fixtures unset it


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An empty cache, no data folder, no mirror, downloads on; a timeout that a loaded 2-core host
    still meets (the stalled-server case shortens it)."""
    monkeypatch.setenv("NETLAB_CACHE", str(tmp_path / "cache"))
    for var in ("NETLAB_DATA_DIR", "NETLAB_DATASET_MIRROR", "NETLAB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETLAB_DOWNLOAD_TIMEOUT", "10")
    return tmp_path / "cache"


@pytest.fixture
def site(tmp_path):
    """A served folder holding the tiny dataset at its layout path."""
    folder = tmp_path / "site"
    (folder / "tiny").mkdir(parents=True)
    (folder / REL).write_bytes(PAYLOAD)
    with serve(folder) as (srv, base):
        yield srv, base, folder


def _register(url, data=PAYLOAD):
    f = catalog.File(REL, url, hashlib.sha256(data).hexdigest(), len(data))
    return registry.register(catalog.Dataset(NAME, (f,)), replace=True)


@pytest.fixture
def tiny(site):
    srv, base, _ = site
    _register(f"{base}/{REL}")
    yield
    registry.unregister(NAME)


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_fresh_cache_downloads_verifies_and_reuses(env, site, tiny):
    srv = site[0]
    path = registry.locate(NAME, REL)
    assert path == env / REL and path.read_bytes() == PAYLOAD
    assert _files(env) == [REL]  # no temporary or lock file left
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert registry.locate(NAME, REL) == path and srv.hits == {f"/{REL}": 1}
    path.write_bytes(PAYLOAD[:-1] + b"!")  # a corrupt cached copy is fetched again
    assert registry.locate(NAME, REL).read_bytes() == PAYLOAD and srv.hits[f"/{REL}"] == 2


def test_mirror_is_tried_before_the_canonical_url(env, site, monkeypatch):
    srv, base, folder = site
    (folder / "canonical").mkdir()
    (folder / "canonical" / "blob.bin").write_bytes(PAYLOAD)
    _register(f"{base}/canonical/blob.bin")
    try:
        monkeypatch.setenv("NETLAB_DATASET_MIRROR", base + "/")
        registry.locate(NAME, REL)
        assert srv.hits == {f"/{REL}": 1}
        (env / REL).unlink()
        monkeypatch.setenv("NETLAB_DATASET_MIRROR", f"{base}/no-such-mirror")
        assert registry.locate(NAME, REL).read_bytes() == PAYLOAD  # mirror 404: canonical
        assert srv.hits[f"/no-such-mirror/{REL}"] == 1 and srv.hits["/canonical/blob.bin"] == 1
    finally:
        registry.unregister(NAME)


@pytest.mark.parametrize(
    "case,reason",
    [
        ("truncated", "got 8192 bytes, expected 16384"),
        ("checksum", "sha256 .*expected"),
        ("cut", "connection closed after 8192 of 16384 bytes"),
        ("stall", r"connection failed after \d+ bytes .*timed out"),
        ("missing", "HTTP 404"),
    ],
)
def test_failed_download_leaves_nothing_and_says_one_line(
    env, site, tiny, case, reason, monkeypatch
):
    srv, base, folder = site
    if case == "stall":
        monkeypatch.setenv("NETLAB_DOWNLOAD_TIMEOUT", "0.5")
    if case == "truncated":
        (folder / REL).write_bytes(PAYLOAD[: len(PAYLOAD) // 2])
    elif case == "checksum":
        (folder / REL).write_bytes(PAYLOAD[:-1] + b"!")
    elif case == "missing":
        (folder / REL).unlink()
    else:
        srv.modes[f"/{REL}"] = case
    with pytest.raises(UserError) as err:
        registry.locate(NAME, REL)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"dataset '{NAME}': missing data file {REL}: ")
    assert f"{base}/{REL} (" in msg and "place the file by hand at " in msg
    assert re.search(reason, msg), msg
    assert not env.exists() or _files(env) == []


def test_offline_names_the_url_and_fetches_nothing(env, site, tiny, monkeypatch):
    monkeypatch.setenv("NETLAB_OFFLINE", "1")
    with pytest.raises(UserError, match=f"downloads are off .*{site[1]}/{REL}") as err:
        registry.locate(NAME, REL)
    assert "python -m netlab.data fetch tiny-test" in str(err.value) and site[0].hits == {}


def test_corrupt_file_in_data_dir_is_refused_not_replaced(env, site, tiny, tmp_path):
    mine = tmp_path / "mine"
    (mine / "tiny").mkdir(parents=True)
    (mine / REL).write_bytes(PAYLOAD[:-1] + b"!")
    with pytest.raises(UserError, match=f"dataset '{NAME}': checksum mismatch for .*{REL}"):
        registry.locate(NAME, REL, mine)
    assert site[0].hits == {} and (mine / REL).read_bytes().endswith(b"!")


_CHILD = """
import sys
from netlab.data import catalog, registry
url, sha, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
registry.register(catalog.Dataset("tiny-test", (catalog.File("tiny/blob.bin", url, sha, size),)))
print(registry.fetch("tiny-test")[0])
"""


@pytest.mark.subprocess
def test_two_processes_fetching_at_once_end_with_one_good_copy(env, site):
    srv, base, _ = site
    srv.modes[f"/{REL}"] = "slow"  # ~0.3 s per download: the two overlap
    args = [f"{base}/{REL}", hashlib.sha256(PAYLOAD).hexdigest(), str(len(PAYLOAD))]
    child_env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, *args],
            env=child_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert {o.strip() for o, _ in outs} == {str(env / REL)}
    assert (env / REL).read_bytes() == PAYLOAD and _files(env) == [REL]
    assert srv.hits[f"/{REL}"] == 1  # the lock let one download; the other found it verified


def test_cli_list_fetch_verify(env, site, tiny, capsys):
    def line(out):
        return next(x for x in out.splitlines() if x.startswith(NAME))

    assert cli.main(["list"]) == 0
    assert "missing   1 of 1 files" in line(capsys.readouterr().out)
    assert cli.main(["fetch", NAME]) == 0
    capsys.readouterr()
    assert cli.main(["list"]) == 0
    assert line(capsys.readouterr().out).split()[1:] == ["cached", str(env)]
    (env / REL).write_bytes(PAYLOAD[:-1] + b"!")  # same size: only verify's hash notices
    assert cli.main(["verify", NAME]) == 1
    assert "corrupt" in line(capsys.readouterr().out)
    assert cli.main(["fetch", "tiny-tset"]) == 2
    assert "did you mean 'tiny-test'" in capsys.readouterr().err


def test_fetch_into_a_folder_for_netlab_data_dir(env, site, tiny, tmp_path):
    out = tmp_path / "shared-copy"
    assert cli.main(["fetch", NAME, "--dir", str(out)]) == 0
    assert (out / REL).read_bytes() == PAYLOAD and not env.exists()


def test_real_cora_through_a_mirror_into_an_empty_cache(env, monkeypatch):
    """The Planetoid Cora files, served from the offline copy as a mirror, download, verify
    against the catalog and load (published statistics)."""
    folder = OFFLINE_COPY
    if not folder or not (pathlib.Path(folder) / "planetoid" / "ind.cora.x").is_file():
        pytest.skip("no offline Cora copy to serve: set NETLAB_DATA_DIR (.ci/run does)")
    from netlab.graph import datasets as D

    with serve(folder) as (srv, base):
        monkeypatch.setenv("NETLAB_DATASET_MIRROR", base)
        ds = D.load_planetoid("cora")
        assert sorted(srv.hits) == sorted(f"/{f.rel}" for f in registry.get("cora").files)
    assert ds.num_nodes == 2708 and ds.num_edges == 10556
    assert _files(env) == sorted(f.rel for f in registry.get("cora").files)
