"""What the driver checks of Ray before a stage (pipeline.ray_session), against nodes given by hand: no Ray started."""

from __future__ import annotations

import pytest

from pipeline.ray_session import (
    InsufficientResourcesError,
    address_to_join,
    host_and_port,
    shortfall,
    stage_request,
    wait_for_resources,
)
from rundir.config import config_from_dict
from rundir.sections import RayConfig

TWO_CPUS = [{"CPU": 2.0, "memory": 1e9}]


def config(**sets):
    return config_from_dict({}, [f"{key}={value}" for key, value in sets.items()])


def test_what_each_stage_asks_for():
    cfg = config(**{"experts.resources.cpus_per_worker": 4, "distill.resources.num_workers": 3, "distill.resources.gpus_per_worker": 0.5})
    assert stage_request(cfg, "experts") == ({"CPU": 4.0}, 1)
    assert stage_request(cfg, "distill") == ({"CPU": 1.0, "GPU": 0.5}, 3)
    assert stage_request(cfg, "tune") == stage_request(cfg, "distill")  # a trial is the student's workers
    assert stage_request(cfg, "split") == ({}, 0)


def test_a_bundle_must_fit_one_node_and_the_workers_the_nodes_together():
    assert shortfall({"CPU": 1.0}, 2, TWO_CPUS) is None
    assert shortfall({"CPU": 4.0}, 1, TWO_CPUS) == "no node has that (the nodes have {CPU: 2})"
    assert shortfall({"CPU": 1.0}, 3, TWO_CPUS) == "together they need {CPU: 3} and the cluster has {CPU: 2}"
    assert shortfall({"CPU": 1.0}, 3, TWO_CPUS + [{"CPU": 1.0}]) is None  # packed over two nodes
    assert shortfall({"CPU": 1.0, "GPU": 1.0}, 1, TWO_CPUS) == "no node has that (the nodes have {CPU: 2})"
    assert shortfall({"CPU": 1.0}, 1, []) == "the cluster has no alive node"


def test_the_student_workers_that_do_not_fit_a_local_ray_fail_at_once():
    cfg = config(**{"distill.resources.num_workers": 3, "distill.resources.cpus_per_worker": 1})
    slept = []
    with pytest.raises(InsufficientResourcesError) as info:
        wait_for_resources(cfg, "distill", local=True, nodes=lambda: TWO_CPUS, sleep=slept.append)
    assert str(info.value) == (
        "distill: each of its 3 workers asks for {CPU: 1}, but together they need {CPU: 3} and the cluster has {CPU: 2}, "
        "and no node can join this local Ray; lower distill.resources or give Ray more (ray.num_cpus, ray.num_gpus)"
    )
    assert slept == []


def test_a_cluster_is_waited_for_until_a_node_fits_or_the_limit(monkeypatch):
    cfg = config(**{"experts.resources.cpus_per_worker": 4, "ray.resource_wait_s": 12})
    grown = iter([TWO_CPUS, TWO_CPUS, TWO_CPUS + [{"CPU": 8.0}]])
    lines = []
    wait_for_resources(cfg, "experts", local=False, log=lines.append, nodes=lambda: next(grown), sleep=lambda s: None)
    assert lines == [
        "== experts: each task asks for {CPU: 4}, but no node has that (the nodes have {CPU: 2}): "
        "waiting up to 12 s for the cluster to grow (ray.resource_wait_s)",
        "== experts: the cluster can run it now",
    ]
    clock = {"now": 0.0}

    def sleep(seconds: float) -> None:
        clock["now"] += seconds

    import pipeline.ray_session as session

    monkeypatch.setattr(session.time, "monotonic", lambda: clock["now"])
    with pytest.raises(InsufficientResourcesError, match=r"after 12 s of waiting no node has that"):
        wait_for_resources(cfg, "experts", local=False, log=lambda line: None, nodes=lambda: TWO_CPUS, sleep=sleep)
    assert clock["now"] == pytest.approx(12.0)  # waited the limit, in POLL_S steps


def test_the_address_to_join(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert address_to_join(RayConfig()) is None  # a local Ray
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")  # what the job supervisor sets inside a Ray Job
    assert address_to_join(RayConfig()) == "10.0.0.5:6379"
    assert address_to_join(RayConfig(address="auto")) == "auto"  # the config's own address wins
    assert host_and_port("10.0.0.5:6379") == ("10.0.0.5", 6379)
    assert host_and_port("ray://head:10001") == ("head", 10001)
    assert host_and_port("auto") is None
