"""Test-wide setup: 8 fake CPU devices, set before jax is imported anywhere."""

import os

# The suite's programs are tiny and compiled once each: compiling costs more than running them.
# LLVM's optimisation passes off (a test file of DiT-MoE steps: 55 s at the default level, 30 s
# at 0), and XLA:CPU's older elemental emitters instead of the MLIR fusion emitters, which take
# about twice the CPU time to compile the same step (the diffusion + MoE registry walks: 164 s of
# CPU -> 86 s, 129 s -> 81 s wall; the emitted code computes the same ops). Every property the
# tests check (closed forms, identities between runs) holds either way; NETLAB_TEST_XLA_OPT=1
# keeps XLA's defaults.
FAST_COMPILE = (
    ""
    if os.environ.get("NETLAB_TEST_XLA_OPT")
    else " --xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
)
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8" + FAST_COMPILE
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The suite never downloads: data comes from NETLAB_DATA_DIR (.ci/run sets it) or the cache; the
# download tests in tests/data/ serve their own files on 127.0.0.1 and lift this themselves.
os.environ.setdefault("NETLAB_OFFLINE", "1")
# The digits Frechet distance trains its ConvNet once per process (~18 s, netlab/diffusion/
# metrics.py); a folder named here, before xdist starts its workers (they inherit the
# environment), lets every worker and kernel of this run reuse the first one's (metrics.py makes
# it when first needed). Removed at the end by the process that named it.
_FD_CACHE_OWNED = "NETLAB_FD_CACHE_DIR" not in os.environ
if _FD_CACHE_OWNED:
    import tempfile
    import uuid

    os.environ["NETLAB_FD_CACHE_DIR"] = os.path.join(
        tempfile.gettempdir(), f"netlab-tests-fd-{uuid.uuid4().hex}"
    )
# Likewise one persistent XLA compile cache for every CLI subprocess of the run, whichever worker
# starts it (tests/train/helpers.py passes it as train.compile_cache; JAX makes the folder).
_COMPILE_CACHE_OWNED = "NETLAB_TEST_COMPILE_CACHE" not in os.environ
if _COMPILE_CACHE_OWNED:
    import tempfile
    import uuid

    os.environ["NETLAB_TEST_COMPILE_CACHE"] = os.path.join(
        tempfile.gettempdir(), f"netlab-tests-jax-cache-{uuid.uuid4().hex}"
    )

import pathlib  # noqa: E402

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data_dir():
    """The data folder $NETLAB_DATA_DIR names (layout in docs/data.md; .ci/run sets it), else skip:
    the suite never downloads."""
    folder = os.environ.get("NETLAB_DATA_DIR", "")
    if not folder or not pathlib.Path(folder).is_dir():
        pytest.skip(
            "no dataset folder: set NETLAB_DATA_DIR to a data folder, e.g. one filled by "
            "`python -m netlab.data fetch all --dir DIR` (docs/data.md)"
        )
    return pathlib.Path(folder)


@pytest.fixture
def fast_digits_fd(monkeypatch):
    """The digits Frechet-distance classifier trained for 40 steps instead of netlab's 400 (test
    accuracy 97.5% vs 98.1%; about 5 s of CPU instead of 21 s, paid once per run through
    $NETLAB_FD_CACHE_DIR): the tests that use it check how an evaluation wires the distance, not
    the classifier. Every user must take this fixture so that they share one cached training."""
    import functools

    from netlab.diffusion import metrics

    fast = functools.partial(metrics.DigitsFeatures, steps=40)
    monkeypatch.setattr(metrics, "DigitsFeatures", fast)


def pytest_runtest_logreport(report):
    """With NETLAB_TEST_TIMES=FILE, append each test phase's duration (to find what to trim)."""
    path = os.environ.get("NETLAB_TEST_TIMES")
    if path:
        with open(path, "a") as f:
            f.write(f"{report.duration:.2f} {report.when} {report.nodeid}\n")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """With NETLAB_TEST_CPU=FILE, append each test's CPU seconds (setup + call + teardown, all
    threads, plus the subprocesses it waited for: the CLI tests): unlike wall time it barely
    moves when the host is busy."""
    path = os.environ.get("NETLAB_TEST_CPU")
    if not path:
        return (yield)
    start = sum(os.times()[:4])
    try:
        return (yield)
    finally:
        with open(path, "a") as f:
            f.write(f"{sum(os.times()[:4]) - start:.2f} {item.nodeid}\n")


def pytest_unconfigure(config):
    """Remove the shared FD-classifier and compile-cache folders this process named at import (the
    ones it owns)."""
    import shutil

    if _FD_CACHE_OWNED:
        shutil.rmtree(os.environ.pop("NETLAB_FD_CACHE_DIR"), ignore_errors=True)
    if _COMPILE_CACHE_OWNED:
        shutil.rmtree(os.environ.pop("NETLAB_TEST_COMPILE_CACHE"), ignore_errors=True)
