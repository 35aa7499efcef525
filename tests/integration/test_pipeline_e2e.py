"""The default pipeline end to end on a local Ray, and what a second run does.

The session's one run of `lfme run ray_config.yaml` (short schedule,
`finished_run` in conftest.py) feeds the tests below; each check recomputes what it asserts independently of the
pipeline's own code (plain torch, plain pyarrow/pandas).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from lfme.storage import read_json
from tests.lfme.test_scalars import read_scalars
from tests.pipeline_helpers import FAST, ONE_WORKER, copy_run, manifest, run_lfme

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("on_shared_ray")]

STAGES = ["split", "experts", "cache", "distill", "evaluate"]


@pytest.fixture
def default_run(finished_run) -> Path:
    return finished_run


def digits_test_set():
    """The balanced digits test set, rebuilt from scikit-learn: the first 40 images of each class."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    idx = np.concatenate([np.flatnonzero(digits.target == c)[:40] for c in range(10)])
    return images[idx], digits.target[idx]


def normalise(images: np.ndarray) -> torch.Tensor:
    # the digits test transform: ToTensor then Normalize((0.5,), (0.5,))
    return (torch.from_numpy(images).float().div(255.0).unsqueeze(1) - 0.5) / 0.5


def test_every_stage_done_with_outputs(default_run):
    data = manifest(default_run)
    assert [s for s in STAGES if data["stages"][s]["status"] == "done"] == STAGES
    assert data["versions"]["ray"].startswith("2.60")
    split = read_json(default_run / "split" / "split.json")
    for subset in split["subsets"]:
        assert (default_run / "experts" / subset["name"] / "model.pt").is_file()
    for name in ("report.json", "report.md", "expert_weights.png", "per_class_accuracy.png"):
        assert (default_run / "evaluate" / name).stat().st_size > 0
    assert (default_run / "config.yaml").is_file()
    assert "epoch 3/3" in (default_run / "first_run.log").read_text()


def test_report_matches_the_student_evaluated_independently(default_run):
    images, labels = digits_test_set()
    from lfme.models import build_model

    saved = torch.load(default_run / "distill" / "student.pt", weights_only=False)
    model = build_model(saved["arch"], 10, in_channels=1)
    model.load_state_dict(saved["model"])
    model.eval()
    with torch.no_grad():
        preds = model(normalise(images)).argmax(1).numpy()
    report = read_json(default_run / "evaluate" / "report.json")
    assert report["student"]["num_samples"] == 400
    assert report["student"]["overall"] == pytest.approx(float((preds == labels).mean()), abs=1e-9)
    assert report["student"]["overall"] > 0.3  # well above chance (0.1) even after 3 short epochs
    per_class = [float((preds[labels == c] == c).mean()) for c in range(10)]
    assert report["student"]["per_class"] == pytest.approx(per_class)


def test_cache_read_back_with_plain_pyarrow_and_pandas(default_run):
    cache = default_run / "cache"
    meta = read_json(cache / "manifest.json")
    shards = [cache / meta["data_dir"] / name for name in meta["parts"]["train"]["shards"]]
    table = pq.read_table(shards[0]) if len(shards) == 1 else None
    frame = pd.concat([pd.read_parquet(s) for s in shards], ignore_index=True)
    split = read_json(default_run / "split" / "split.json")
    assert len(frame) == split["sizes"]["train"]
    assert list(frame.columns) == ["sample_id", "label", "subset", "logits", "confidence"]
    if table is not None:
        assert str(table.schema.field("logits").type) == "fixed_size_list<element: halffloat>[10]"
    assert frame["sample_id"].is_monotonic_increasing and frame["sample_id"].is_unique

    # Recompute one expert's logits and p_i on a few training images with plain torch.
    from sklearn.datasets import load_digits

    from lfme.models import build_model

    digits = load_digits()
    test_idx = np.concatenate([np.flatnonzero(digits.target == c)[:40] for c in range(10)])
    train_pool = np.setdiff1d(np.arange(len(digits.target)), test_idx)  # the source's train list, in order
    subset = split["subsets"][0]
    saved = torch.load(default_run / "experts" / subset["name"] / "model.pt", weights_only=False)
    expert = build_model(saved["arch"], len(subset["classes"]), in_channels=1)
    expert.load_state_dict(saved["model"])
    expert.eval()
    rows = frame.iloc[:25]
    images = (digits.images[train_pool[rows["sample_id"].to_numpy()]] * (255.0 / 16.0)).round().astype(np.uint8)
    assert (digits.target[train_pool[rows["sample_id"].to_numpy()]] == rows["label"].to_numpy()).all()
    with torch.no_grad():
        logits = expert(normalise(images)).numpy()
    cached = np.stack(rows["logits"].to_numpy())[:, subset["classes"]].astype(np.float32)
    np.testing.assert_allclose(cached, logits, rtol=2e-3, atol=2e-2)
    mine = rows["subset"].to_numpy() == 0
    probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
    local = np.searchsorted(subset["classes"], rows["label"].to_numpy()[mine])
    np.testing.assert_allclose(rows["confidence"].to_numpy()[mine], probs[mine, local], rtol=1e-3, atol=1e-4)


def test_second_run_skips_every_stage(default_run):
    before = manifest(default_run)
    result = run_lfme("run", "ray_config.yaml", "--run-dir", str(default_run), sets=FAST, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for stage in STAGES:
        assert f"== {stage}: up to date" in result.stdout
    after = manifest(default_run)
    for stage in STAGES:
        assert after["stages"][stage]["finished_at"] == before["stages"][stage]["finished_at"]


def test_live_teachers_on_unaugmented_images_reproduce_the_cache(default_run):
    """The two sources of KD targets agree where their inputs agree: the validation images, test transform."""
    from lfme.teacher_cache import read_cache
    from lfme.teachers import LiveTeachers
    from rundir.config import load_config
    from rundir.data import make_loader
    from rundir.layout import load_expert, load_split

    config = load_config("ray_config.yaml")
    split = load_split(str(default_run), config.data)
    experts = [load_expert(str(default_run), s, split.channels, torch.device("cpu")) for s in split.subsets]
    live = LiveTeachers(experts, split.subsets, split.num_classes)
    cached = read_cache(str(default_run / "cache"), "val")
    for images, _, sample_ids in make_loader(split.val, config.data, False, batch_size=64):
        rows = cached.rows_for(sample_ids.numpy())
        np.testing.assert_allclose(live(images).numpy(), cached.logits[rows].astype(np.float32), rtol=2e-3, atol=2e-2)


def test_changing_a_distill_setting_reruns_only_distill_and_evaluate(default_run, tmp_path):
    run_dir = copy_run(default_run, tmp_path / "run")
    expert = run_dir / "experts" / read_json(run_dir / "split" / "split.json")["subsets"][0]["name"] / "model.pt"
    expert_bytes = expert.read_bytes()
    # Live teachers as the changed setting: this also runs the live-teacher path end to end.
    sets = FAST + [ONE_WORKER, "distill.temperature=4", "distill.teachers=live"]
    result = run_lfme("run", "ray_config.yaml", "--run-dir", str(run_dir), sets=sets)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for stage in ("split", "experts", "cache"):
        assert f"== {stage}: up to date" in result.stdout
    for stage in ("distill", "evaluate"):
        assert f"== {stage}: running" in result.stdout
    first, second = manifest(default_run), manifest(run_dir)
    assert second["stages"]["distill"]["fingerprint"] != first["stages"]["distill"]["fingerprint"]
    assert second["stages"]["cache"]["fingerprint"] == first["stages"]["cache"]["fingerprint"]
    assert expert.read_bytes() == expert_bytes
    history = read_json(run_dir / "distill" / "history.json")
    assert [h["epoch"] for h in history] == [1, 2, 3] and all(h["kd"] > 0 for h in history)


def test_a_cache_built_from_other_experts_is_refused_and_nothing_is_lost(default_run, tmp_path):
    run_dir = copy_run(default_run, tmp_path / "run")
    split = read_json(run_dir / "split" / "split.json")
    name = split["subsets"][-1]["name"]
    # Another expert in place of the one the cache was built from.
    path = run_dir / "experts" / name / "model.pt"
    saved = torch.load(path, weights_only=False)
    first = next(iter(saved["model"]))
    saved["model"][first] = saved["model"][first] + 1.0
    torch.save(saved, path)
    student = (run_dir / "distill" / "student.pt").read_bytes()
    cache_manifest = (run_dir / "cache" / "manifest.json").read_bytes()

    result = run_lfme("run", "ray_config.yaml", "--run-dir", str(run_dir), "--stage", "distill",
                      sets=FAST + ["distill.temperature=3"], timeout=300)
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert "CacheMismatchError" in message and repr(name) in message and "other experts" in message
    assert (run_dir / "distill" / "student.pt").read_bytes() == student
    assert (run_dir / "cache" / "manifest.json").read_bytes() == cache_manifest
    assert manifest(run_dir)["stages"]["distill"]["status"] == "failed"


def test_one_stage_alone_names_its_missing_inputs(tmp_path):
    result = run_lfme("run", "ray_config.yaml", "--run-dir", str(tmp_path / "empty"), "--stage", "distill", timeout=120)
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert "'split'" in message and "'cache'" in message and "--stage split" in message


def test_experts_min_steps_gives_small_subsets_more_epochs(default_run, tmp_path):
    """experts.min_steps: each expert trains until it took that many SGD steps; the count is redone here by hand."""
    run_dir = copy_run(default_run, tmp_path / "run")
    min_steps, batch, epochs = 20, 64, 2  # ray_config.yaml's experts.batch_size, FAST's experts.epochs
    result = run_lfme("run", "ray_config.yaml", "--run-dir", str(run_dir), "--stage", "experts",
                      sets=FAST + [f"experts.min_steps={min_steps}"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    split = read_json(run_dir / "split" / "split.json")
    for subset in split["subsets"]:
        images = sum(split["class_counts"][c] for c in subset["classes"])
        steps_per_epoch = -(-images // batch)
        expected = max(epochs, -(-min_steps // steps_per_epoch))
        expert = read_json(run_dir / "experts" / subset["name"] / "result.json")
        assert expert["epochs"] == expected and [h["epoch"] for h in expert["history"]] == list(range(1, expected + 1))
        assert expert["steps"] == expected * steps_per_epoch >= min_steps
    assert len({read_json(run_dir / "experts" / s["name"] / "result.json")["epochs"] for s in split["subsets"]}) > 1


def test_every_epoch_of_every_expert_and_of_the_student_is_in_tensorboard(default_run):
    history = read_json(default_run / "distill" / "history.json")
    student = read_scalars(default_run / "tensorboard" / "distill" / "student")
    assert {"loss", "ce", "kd", "train_acc", "val_acc", "lr", "mean_instance_weight", "seconds"} <= set(student)
    assert student["val_acc"] == {h["epoch"]: pytest.approx(h["val_acc"]) for h in history}
    assert student["mean_instance_weight"] == {h["epoch"]: pytest.approx(h["mean_instance_weight"]) for h in history}
    for name in history[0]["weights_used"]:  # w_l of each expert, as SpES set it for that epoch
        assert student[f"w/{name}"] == {h["epoch"]: pytest.approx(h["weights_used"][name]) for h in history}
    for subset in read_json(default_run / "split" / "split.json")["subsets"]:
        result = read_json(default_run / "experts" / subset["name"] / "result.json")
        expert = read_scalars(default_run / "tensorboard" / "experts" / subset["name"])
        assert expert["val_acc"] == {h["epoch"]: pytest.approx(h["val_acc"]) for h in result["history"]}
        assert expert["lr"][1] == pytest.approx(0.05)  # ray_config.yaml's experts.lr, the first epoch's


def test_joint_experts_and_a_cache_of_views_run_end_to_end_and_lfme_verify_checks_the_views_shards(default_run, tmp_path):
    """Three switches in one run (each alone would cost a run): experts.init=joint, cache.views=2 and
    cache.allot=draws (2 x 564 views shared by the student's class sampling, a row each).

    And the one cache here written by several tasks per part (`cache.shard_rows`: by default the
    default run's parts are one shard each), a tail image's views across two shards: the student
    reads the shards as one table.
    """
    run_dir = copy_run(default_run, tmp_path / "run")
    result = run_lfme("run", "ray_config.yaml", "--run-dir", str(run_dir),
                      sets=FAST + [ONE_WORKER, "cache.views=2", "cache.allot=draws", "experts.init=joint", "cache.shard_rows=100"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "== split: up to date" in result.stdout
    for stage in ("experts", "cache", "distill", "evaluate"):
        assert f"== {stage}: running" in result.stdout
    # The joint model first, then the three specialists, each started from it.
    out = result.stdout
    assert out.index("experts: _joint done") < min(out.index(f"experts: {name} done") for name in ("many", "medium", "few"))
    joint = read_json(run_dir / "experts" / "_joint" / "result.json")
    assert joint["classes"] == list(range(10)) and joint["fingerprint"] == manifest(run_dir)["stages"]["experts"]["fingerprint"]
    assert "2 augmented views per training image on average, allotted by the student's class sampling" in result.stdout
    cache = read_json(run_dir / "cache" / "manifest.json")
    train = cache["parts"]["train"]
    assert train["allot"] == "draws" and "views" not in train and "allot" not in cache["parts"]["val"]
    # 2 x 564 = 1,128 views, a row each, in shards of 100; the 100 validation images in one per task slot (4 = 2 CPUs / 0.5).
    assert train["shard_rows"] == [100] * 11 + [28] and cache["parts"]["val"]["shard_rows"] == [25] * 4
    assert "cache: 16 shard tasks over train and val" in result.stdout
    shards = [pq.read_table(run_dir / "cache" / cache["data_dir"] / name, columns=["sample_id"]) for name in train["shards"]]
    views = np.unique(np.concatenate([shard.column(0).to_numpy() for shard in shards]), return_counts=True)[1]
    assert views.size == 564 and views.min() >= 1 and views.max() > 2  # the tail's images get more than K = 2 each
    assert all(h["kd"] > 0 for h in read_json(run_dir / "distill" / "history.json"))
    assert run_lfme("verify", str(run_dir)).returncode == 0
    shard = run_dir / "cache" / cache["data_dir"] / cache["parts"]["train"]["shards"][0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 1
    shard.write_bytes(bytes(data))
    damaged = run_lfme("verify", str(run_dir))
    assert damaged.returncode != 0 and shard.name in damaged.stdout + damaged.stderr
