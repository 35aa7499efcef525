"""Shared fixtures: a real S3 API on loopback for the storage tests.

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

import pytest

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
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"moto S3 server did not start on {endpoint}: see {log.name}")
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
