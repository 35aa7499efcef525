"""Shared fixtures: one Ray head, one finished pipeline run, and a real S3 API on loopback.

`shared_ray` is a Ray head (2 CPUs, like the local Ray of a test run on this
machine) started once per session with `ray start` on 127.0.0.1
(`tests.ray_cluster`). A test that takes `on_shared_ray` runs its `lfme`
commands with `RAY_ADDRESS` pointing at it, so each driver joins it (as inside
a Ray Job) instead of starting and stopping a Ray of its own. Tests whose
subject is the driver's own Ray (its start, Ctrl-C, a kill of its process
group, fake GPUs, the resource check of a local Ray) keep a local Ray. The
head starts after the session's S3 server (`s3_endpoint`), so its workers
inherit the S3 credentials and endpoint the S3 tests' runs need, as a
cluster's nodes get them from their environment.

`finished_run` is the default pipeline (ray_config.yaml with the short FAST
schedule) run once per session through the CLI, as a user runs it. Every
integration test that needs finished stages starts from it: tests that only
read it take it as is, tests that change a run work on a copy
(`pipeline_helpers.copy_run`), so a stage that must not rerun is skipped as
up to date instead of being trained again by each test module.

`s3_endpoint` starts moto's S3 server (`python -m moto.server`) on 127.0.0.1
for the whole session and points the AWS environment variables at it, which
is how the project expects credentials and endpoints to arrive (never from a
config). Child processes (`lfme run`, Ray workers) inherit the environment.

The tiers follow the folders: every test under tests/integration/ is marked
`integration` (each file says so in its `pytestmark`), no other test is, and
only integration tests use the fixtures above that start a server process
(`SERVER_FIXTURES`). Collection stops with a usage error naming each test that
breaks this (`tier_problems`), so `pytest -m "not integration"` starts neither
a Ray head nor the S3 server.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pipeline_helpers import FAST, REPO, run_lfme
from tests.ray_cluster import free_port, head
from tests.test_lint import MYPY_RUN, MYPY_TEST, start_mypy, stop_mypy

INTEGRATION = Path(__file__).resolve().parent / "integration"
# The fixtures that start (or need) a server process: the Ray head, a pipeline run on it, the S3 server.
SERVER_FIXTURES = frozenset({"shared_ray", "on_shared_ray", "finished_run", "s3_endpoint", "s3_bucket"})

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "lfme-test-key-id",
    "AWS_SECRET_ACCESS_KEY": "lfme-test-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def tier_problems(items) -> list[str]:
    """One line per collected test that is in the wrong tier for its folder, or uses a server fixture outside integration/."""
    problems = []
    for item in items:
        inside = INTEGRATION in Path(item.path).resolve().parents
        marked = item.get_closest_marker("integration") is not None
        if inside and not marked:
            problems.append(f"{item.nodeid}: under tests/integration/ but not marked integration (pytestmark = pytest.mark.integration)")
        if marked and not inside:
            problems.append(f"{item.nodeid}: marked integration outside tests/integration/ (move it there)")
        servers = sorted(SERVER_FIXTURES & set(getattr(item, "fixturenames", ())))
        if servers and not inside:
            problems.append(f"{item.nodeid}: uses {', '.join(servers)} (a server process) outside tests/integration/")
    return problems


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: every collected test is checked, whichever tier runs
def pytest_collection_modifyitems(items) -> None:
    problems = tier_problems(items)
    if problems:
        raise pytest.UsageError("tests in the wrong tier:\n  " + "\n  ".join(problems))


def pytest_collection_finish(session) -> None:
    """Start the type checker now when its test will run: it runs beside the tests until that test reads it."""
    if not session.config.option.collectonly and any(item.nodeid == MYPY_TEST for item in session.items):
        session.config.stash[MYPY_RUN] = start_mypy()


def pytest_sessionfinish(session) -> None:
    """A run stopped before that test (-x, Ctrl-C) leaves no type checker running and no output file."""
    started = session.config.stash.get(MYPY_RUN, None)
    if started is not None:
        stop_mypy(*started)


@pytest.fixture(scope="session")
def shared_ray(s3_endpoint):
    """The session's Ray head on loopback, with the S3 server's environment; yields its GCS address (host:port)."""
    with head(num_cpus=2, cwd=REPO) as cluster:
        yield cluster.gcs


def _join(patch: pytest.MonkeyPatch, address: str) -> None:
    patch.setenv("RAY_ADDRESS", address)
    patch.setenv("RAY_AUTH_MODE", "disabled")  # the head runs without token authentication, on loopback


@pytest.fixture
def on_shared_ray(shared_ray, monkeypatch) -> str:
    """This test's `lfme` commands join the session's Ray head (their RAY_ADDRESS); returns its address."""
    _join(monkeypatch, shared_ray)
    return shared_ray


@contextlib.contextmanager
def joining(address: str) -> Iterator[None]:
    """`on_shared_ray` for a module- or session-scoped fixture, which is set up before any test's fixtures."""
    with pytest.MonkeyPatch.context() as patch:
        _join(patch, address)
        yield


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, shared_ray) -> Path:
    """A run directory with every stage of the default pipeline done (FAST schedule). Read it; copy it to change it."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    with joining(shared_ray):
        result = run_lfme("run", "ray_config.yaml", "--run-dir", str(run_dir), sets=FAST)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir / "first_run.log").write_text(result.stdout)
    return run_dir


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=2)
            break
        except OSError as err:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"moto S3 server did not start on {endpoint}: see {log.name}") from err
            time.sleep(0.3)
    saved = {key: os.environ.get(key) for key in [*S3_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(S3_ENV, AWS_ENDPOINT_URL=endpoint)
    try:
        yield endpoint
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture
def s3_bucket(s3_endpoint) -> str:
    """A new, empty bucket on the session's S3 server; returns its name."""
    import boto3

    name = f"lfme-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


def s3_objects(endpoint: str, bucket: str) -> dict[str, int]:
    """Every object key in the bucket -> its size, listed with boto3 (independently of fsspec)."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    objects = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        objects.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    return objects
