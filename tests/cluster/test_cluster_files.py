"""The cluster files in cluster/ (launcher YAML, KubeRay RayJob) parse, and the overrides they pass are valid config keys."""

from __future__ import annotations

import shlex

import yaml

from rundir.config import load_config
from tests.pipeline_helpers import REPO


def test_cluster_files_parse_and_pass_valid_settings():
    launcher = yaml.safe_load((REPO / "cluster" / "aws-gpu.yaml").read_text())
    assert launcher["provider"]["type"] == "aws"
    head = launcher["available_node_types"][launcher["head_node_type"]]
    assert head["resources"]["GPU"] == 0
    workers = [t for name, t in launcher["available_node_types"].items() if name != launcher["head_node_type"]]
    assert workers and all(t["resources"]["GPU"] >= 1 and t["max_workers"] >= t["min_workers"] for t in workers)
    assert any("pip install" in command for command in launcher["setup_commands"])

    job = yaml.safe_load((REPO / "cluster" / "rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert runtime_env["working_dir"] and any(p.startswith("torch==") for p in runtime_env["pip"])
    groups = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    limits = groups[0]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) >= 1

    # The entrypoint's config and overrides load: every key it sets exists.
    args = shlex.split(job["spec"]["entrypoint"])
    assert args[:4] == ["python", "-m", "pipeline.cli", "run"] and "ray.address=auto" in args
    overrides = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    config = load_config(REPO / args[4], overrides)
    assert config.ray.address == "auto" and config.distill.resources.gpus_per_worker == 1
