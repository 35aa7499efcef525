"""pipeline.runner: what it checks before it skips a done stage (the outputs' sizes, the bytes of the small ones), what it records."""

from __future__ import annotations

import hashlib

from pipeline.manifest import Manifest
from pipeline.runner import damaged_outputs, reason_to_run, record_outputs


def done_stage(tmp_path, files: dict[str, bytes]) -> tuple[str, Manifest]:
    run_dir = str(tmp_path / "run")
    for name, data in files.items():
        path = tmp_path / "run" / "distill" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    manifest = Manifest.load(run_dir)
    manifest.start("distill", "f" * 16, {})
    manifest.finish("distill", {}, outputs=record_outputs(run_dir, "distill"))
    return run_dir, manifest


def flip_a_byte(path, at: int = 10) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_outputs_are_recorded_with_their_sha256(tmp_path):
    _, manifest = done_stage(tmp_path, {"student.pt": b"weights" * 10})
    assert manifest.record("distill").outputs == {
        "student.pt": {"bytes": 70, "sha256": hashlib.sha256(b"weights" * 10).hexdigest()}
    }


def test_a_flipped_byte_in_a_small_output_reruns_the_stage(tmp_path):
    run_dir, manifest = done_stage(tmp_path, {"student.pt": b"weights" * 10, "history.json": b"[]"})
    assert reason_to_run(manifest, run_dir, "distill", "f" * 16, set()) is None  # intact: skipped
    flip_a_byte(tmp_path / "run" / "distill" / "student.pt")
    why = reason_to_run(manifest, run_dir, "distill", "f" * 16, set())
    assert why == "distill/student.pt has other bytes than were written (SHA-256 differs)"


def test_a_file_over_the_limit_is_checked_by_size_before_a_skip_and_by_bytes_in_verify(tmp_path):
    run_dir, manifest = done_stage(tmp_path, {"shard.parquet": bytes(1000)})
    flip_a_byte(tmp_path / "run" / "distill" / "shard.parquet")
    record = manifest.record("distill")
    assert damaged_outputs(run_dir, "distill", record, hash_up_to=999) == []
    assert damaged_outputs(run_dir, "distill", record, hash_up_to=1000) == [
        "distill/shard.parquet has other bytes than were written (SHA-256 differs)"
    ]


def test_the_runner_records_digests_a_stage_hashed_as_it_wrote_without_reading_those_files_again(tmp_path, monkeypatch):
    import hashlib

    from lfme import storage
    from pipeline import runner

    folder = tmp_path / "cache" / "data-x"
    folder.mkdir(parents=True)
    (folder / "train-00000.parquet").write_bytes(b"shard bytes")
    (tmp_path / "cache" / "manifest.json").write_bytes(b"{}")
    read = []
    real = storage.file_sha256
    monkeypatch.setattr(storage, "file_sha256", lambda path: read.append(path) or real(path))

    shard_digest = hashlib.sha256(b"shard bytes").hexdigest()
    outputs = runner.record_outputs(str(tmp_path), "cache", {"data-x/train-00000.parquet": shard_digest})
    assert outputs == {
        "data-x/train-00000.parquet": {"bytes": 11, "sha256": shard_digest},
        "manifest.json": {"bytes": 2, "sha256": hashlib.sha256(b"{}").hexdigest()},
    }
    assert [p.rsplit("/", 1)[-1] for p in map(str, read)] == ["manifest.json"]
