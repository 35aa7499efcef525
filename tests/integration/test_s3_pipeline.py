"""The whole pipeline with its run directory on S3 (moto's server on loopback).

Nothing of the run may land on the local disk: manifest, split, experts, Ray
Train's checkpoints, the teacher cache, the student and the reports are all
objects in the bucket, checked with boto3 (not with the project's own fsspec
code). Credentials reach the run only through the environment: no object may
contain the secret key.
"""

from __future__ import annotations

import json
import re

import boto3
import pytest

from tests.conftest import S3_ENV, joining, s3_objects
from tests.pipeline_helpers import FAST, ONE_WORKER, run_lfme

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("on_shared_ray")]

STAGES = ["split", "experts", "cache", "distill", "evaluate"]


@pytest.fixture(scope="module")
def s3_run(s3_endpoint, shared_ray):
    bucket = "lfme-pipeline-run"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    run_dir = f"s3://{bucket}/runs/digits"
    with joining(shared_ray):
        first = run_lfme("run", "ray_config.yaml", "--run-dir", run_dir, sets=FAST)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    return {"endpoint": s3_endpoint, "bucket": bucket, "run_dir": run_dir, "stdout": first.stdout}


def get_json(run: dict, key: str) -> dict:
    client = boto3.client("s3", endpoint_url=run["endpoint"])
    return json.loads(client.get_object(Bucket=run["bucket"], Key=f"runs/digits/{key}")["Body"].read())


def test_every_output_is_an_object_in_the_bucket(s3_run):
    keys = set(s3_objects(s3_run["endpoint"], s3_run["bucket"]))
    manifest = get_json(s3_run, "manifest.json")
    assert [s for s in STAGES if manifest["stages"][s]["status"] == "done"] == STAGES
    expected = {"manifest.json", "config.yaml", "split/split.json", "split/samples.parquet", "split/inputs.json", "cache/manifest.json",
                "distill/student.pt", "distill/history.json", "evaluate/report.json", "evaluate/report.md",
                "evaluate/per_class_accuracy.png", "evaluate/expert_weights.png"}
    expected |= {f"{stage}/settings.json" for stage in STAGES}
    for subset in get_json(s3_run, "split/split.json")["subsets"]:
        expected |= {f"experts/{subset['name']}/model.pt", f"experts/{subset['name']}/result.json"}
    cache = get_json(s3_run, "cache/manifest.json")
    for part in cache["parts"].values():
        expected |= {f"cache/{cache['data_dir']}/{shard}" for shard in part["shards"]}
    missing = sorted(k for k in expected if f"runs/digits/{k}" not in keys)
    assert not missing, f"not in the bucket: {missing}"
    # Ray Train's checkpoints of the student live in the bucket too.
    checkpoints = {k.split("/")[3] for k in keys if re.match(r"runs/digits/ray/[^/]+/checkpoint_", k)}
    assert len(checkpoints) == 1 and next(iter(checkpoints)).startswith("distill-student-")
    # The experts checkpointed there as they trained; each checkpoint went once its expert was done.
    assert not [k for k in keys if k.startswith("runs/digits/experts/") and k.endswith("/checkpoint.pt")]


def test_credentials_never_written(s3_run):
    client = boto3.client("s3", endpoint_url=s3_run["endpoint"])
    secret = S3_ENV["AWS_SECRET_ACCESS_KEY"].encode()
    for key in s3_objects(s3_run["endpoint"], s3_run["bucket"]):
        assert secret not in client.get_object(Bucket=s3_run["bucket"], Key=key)["Body"].read(), key


def test_second_run_reads_the_manifest_from_s3_and_skips(s3_run):
    before = get_json(s3_run, "manifest.json")
    second = run_lfme("run", "ray_config.yaml", "--run-dir", s3_run["run_dir"], sets=FAST)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("up to date") == len(STAGES)
    after = get_json(s3_run, "manifest.json")
    assert [after["stages"][s]["finished_at"] for s in STAGES] == [before["stages"][s]["finished_at"] for s in STAGES]

    status = run_lfme("status", s3_run["run_dir"])
    assert status.returncode == 0 and status.stdout.count(" done ") == len(STAGES), status.stdout


def test_a_local_run_reuses_the_buckets_experts_and_cache(s3_run, tmp_path):
    """`lfme run --reuse s3://...`: another student (temperature 3) on the bucket's split, experts and cache."""
    local = tmp_path / "t3"
    run = run_lfme("run", "ray_config.yaml", "--run-dir", str(local), "--reuse", s3_run["run_dir"],
                   sets=FAST + [ONE_WORKER, "distill.temperature=3"])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for stage in ("split", "experts", "cache"):
        assert f"== {stage}: reused from {s3_run['run_dir']}" in run.stdout
        assert f"== {stage}: up to date" in run.stdout
    assert "== distill: running" in run.stdout and "== evaluate: running" in run.stdout
    theirs, ours = get_json(s3_run, "manifest.json"), json.loads((local / "manifest.json").read_text())
    for stage in ("split", "experts", "cache"):
        assert ours["stages"][stage] == theirs["stages"][stage]
    assert ours["stages"]["distill"]["fingerprint"] != theirs["stages"]["distill"]["fingerprint"]
    # the copied cache is the bucket's, byte for byte (the student's check against the experts' hashes passed)
    cache = get_json(s3_run, "cache/manifest.json")
    assert json.loads((local / "cache" / "manifest.json").read_text()) == cache


def test_the_student_loads_from_the_bucket_and_its_curves_are_there(s3_run):
    from pipeline.student import load_student
    from tests.lfme.test_scalars import parse_events

    student = load_student(s3_run["run_dir"])  # checked against the manifest's SHA-256, read through fsspec
    assert student.class_names == [str(d) for d in range(10)] and student.accuracy["overall"] == get_json(s3_run, "evaluate/report.json")["student"]["overall"]
    keys = s3_objects(s3_run["endpoint"], s3_run["bucket"])
    events = [k for k in keys if k.startswith("runs/digits/tensorboard/distill/student/events.out.tfevents.")]
    assert len(events) == 1  # uploaded after each epoch, one file
    body = boto3.client("s3", endpoint_url=s3_run["endpoint"]).get_object(Bucket=s3_run["bucket"], Key=events[0])["Body"].read()
    history = get_json(s3_run, "distill/history.json")
    assert parse_events(body)["val_acc"] == {h["epoch"]: pytest.approx(h["val_acc"]) for h in history}
    for subset in get_json(s3_run, "split/split.json")["subsets"]:
        assert any(k.startswith(f"runs/digits/tensorboard/experts/{subset['name']}/events.") for k in keys)
