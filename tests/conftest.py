"""Shared fixtures: one finished pipeline run, and a real S3 API on loopback.

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
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
import urllib.request

from pathlib import Path

import pytest

from tests.pipeline_helpers import FAST, run_lfme

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "lfme-test-key-id",
    "AWS_SECRET_ACCESS_KEY": "lfme-test-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """A run directory with every stage of the default pipeline done (FAST schedule). Read it; copy it to change it."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    result = run_lfme("run", "ray_config.yaml", "--run-dir", str(run_dir), sets=FAST)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir / "first_run.log").write_text(result.stdout)
    return run_dir


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    port = _free_port()
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
