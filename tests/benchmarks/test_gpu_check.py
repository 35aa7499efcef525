"""benchmarks/gpu_check.py's records on fabricated inputs: no GPU, no Ray, well under a second."""

from __future__ import annotations

import json

import numpy as np

from benchmarks import gpu_check
from lfme.data import imagefolder


def test_generated_cifar_is_an_imagefolder_the_pipeline_reads(tmp_path):
    made = gpu_check.make_cifar(tmp_path / "cifar10", train_per_class=2, test_per_class=1, workers=1)
    assert made["images"] == 30
    source = imagefolder(tmp_path / "cifar10")
    assert source.class_names == gpu_check.CIFAR10_CLASSES and source.channels == 3
    assert len(source.train) == 20 and len(source.test) == 10
    assert np.bincount(source.train.labels).tolist() == [2] * 10


def test_progress_lines_and_the_projection():
    log = (
        "\x1b[36m(train_expert pid=1)\x1b[0m [expert many] epoch 3/200  loss 1.0  train acc 50.0%  val acc 40.0%  2.0s/epoch  ETA 0:06:34\n"
        "[expert few] epoch 9/200  loss 1.0  train acc 50.0%  val acc 60.5%  0.5s/epoch  ETA 0:01:35\n"
        "[student] epoch 2/200  loss 1.0  train acc 50.0%  val acc 30.0%  3.0s/epoch  ETA 0:09:54\n"
        "[expert many] epoch 4/200  loss 1.0  train acc 50.0%  val acc 41.0%  2.5s/epoch  ETA 0:08:10\n"
    )
    lines = gpu_check.progress(log)
    assert lines["expert many"] == {"epoch": 4, "epochs": 200, "val_acc": 0.41, "seconds_per_epoch": 2.5, "eta_s": 490}
    assert lines["student"]["eta_s"] == 594
    record = {"progress": lines, "experts": {"medium": {"seconds": 100.0}}, "stages": {"split": {"duration_s": 10.0}}, "epochs": {}}
    got = gpu_check.projection(record)
    assert got["experts_s"] == 500.0 and got["student_s"] == 600.0 and got["total_s"] == 1110.0
    assert gpu_check.projection({"progress": {"expert few": lines["expert few"]}, "experts": {}}) is None  # no student yet


def test_run_record_reads_manifest_results_history_and_gpu_windows(tmp_path):
    run = tmp_path / "run"
    (run / "experts" / "many").mkdir(parents=True)
    (run / "distill").mkdir()
    manifest = {
        "format": "lfme-run/1",
        "stages": {
            "experts": {"status": "done", "duration_s": 12.5, "attempts": 1, "summary": {},
                        "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:00:12+00:00"},
            "distill": {"status": "interrupted", "duration_s": None, "attempts": 1, "summary": {},
                        "started_at": "2026-01-01T00:00:20+00:00", "finished_at": "2026-01-01T00:00:30+00:00"},
        },
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    t0 = 1767225600.0  # 2026-01-01T00:00:00Z
    (run / "experts" / "many" / "result.json").write_text(json.dumps({
        "device": "cuda", "gpu_ids": ["0"], "precision": "bf16", "epochs": 2, "steps": 20, "val_accuracy": 0.9,
        "started_at": t0 + 1, "finished_at": t0 + 11, "history": [{"seconds": 6.0}, {"seconds": 4.0}],
    }))
    (run / "distill" / "history.json").write_text(json.dumps([{"seconds": 5.0, "precision": "bf16", "val_acc": 0.5},
                                                              {"seconds": 3.0, "precision": "bf16", "val_acc": 0.7}]))
    (run / "config.yaml").write_text("precision: bf16\nexperts: {epochs: 2, resources: {gpus_per_worker: 0.33}}\n")
    samples = [{"t": t0 + 5, "util": 80.0, "mem_mib": 3000.0, "processes": {"ray::train_expert": 1500.0}},
               {"t": t0 + 25, "util": 60.0, "mem_mib": 2000.0, "processes": {"ray::RayTrainWorker": 1800.0}}]
    record = gpu_check.run_record(run, "", samples)
    assert record["stages"]["experts"]["gpu"]["processes_max_mib"] == {"ray::train_expert": 1500.0}
    assert record["stages"]["distill"]["gpu"]["util_mean"] == 60.0
    expert = record["experts"]["many"]
    assert expert["device"] == "cuda" and expert["seconds"] == 10.0 and expert["epoch_s_median"] == 5.0
    assert record["student"] == {"epochs": 2, "precision": ["bf16"], "epoch_s_first": 5.0, "epoch_s_median_later": 3.0, "val_acc": 0.7}
    assert record["resources"]["experts"] == {"gpus_per_worker": 0.33}
    assert gpu_check.run_problems(record, "cuda") == ["stage distill: interrupted"]
    record["experts"]["many"]["device"] = "cpu"
    assert "expert many ran on cpu" in gpu_check.run_problems(record, "cuda")
    assert gpu_check.run_problems(record, "cpu") == ["stage distill: interrupted"]


def test_junit_parts_steps_and_summary(tmp_path):
    xml = tmp_path / "junit.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_gpu" name="test_a" time="1.5"/>'
        '<testcase classname="tests.test_gpu" name="test_b" time="0.1"><skipped message="needs CUDA: no"/></testcase>'
        '<testcase classname="tests.test_gpu" name="test_c" time="0.2"><failure message="3.0 syncs per step">trace</failure></testcase>'
        "</testsuite></testsuites>"
    )
    junit = gpu_check.junit_record(xml)
    assert junit["counts"] == {"passed": 1, "failed": 1, "error": 0, "skipped": 1}
    assert gpu_check.status_of(0) == "ok" and gpu_check.status_of(124) == "timeout" and gpu_check.status_of(1) == "failed"
    assert gpu_check.part("paper", 130, 10.0, None, boxed=True)["status"] == "partial"
    versions = tmp_path / "versions.json"
    versions.write_text(json.dumps({"torch": "x"}))
    tests = gpu_check.part("pytest", 0, 3.0, "pytest -m gpu", junit=junit, problems=["tests.test_gpu::test_c"])
    step = gpu_check.write_step(tmp_path / "gpu-tests.json", "tests", "cuda", [tests], versions_file=str(versions))
    assert step["status"] == "failed" and step["versions"] == {"torch": "x"}  # exit 0, but a test failed
    gpu_check.write_step(tmp_path / "gpu-paper.json", "paper", "cuda", [], skipped="no real CIFAR-10 given", versions_file=str(versions))
    gpu_check.write_step(tmp_path / "gpu-run.json", "run", "cuda", [], failed="Ray is not importable", versions_file=str(versions))
    text = gpu_check.summary(tmp_path)
    assert [line.split()[0] for line in text.splitlines() if not line.startswith(" ")] == ["tests", "run", "paper"]  # the script's order
    assert "tests   failed" in text and "failed: tests.test_gpu::test_c: 3.0 syncs per step" in text
    assert "skipped x1: needs CUDA: no" in text
    assert "run     failed" in text and "(Ray is not importable)" in text
    assert "paper   skipped" in text and "(no real CIFAR-10 given)" in text
