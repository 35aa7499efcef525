"""A run's trained student, ready to use outside the pipeline: load it, classify images with it.

    from pipeline.student import load_student

    student = load_student("runs/default")            # a local path or s3://..., like every run directory
    probs = student.probabilities([Image.open("a.png")])   # (n, C) softmax over the student's classes
    print(student.class_names[probs[0].argmax()], student.accuracy["overall"])

`load_student` checks `distill/student.pt` against the SHA-256 the manifest
recorded when the distill stage wrote it, and names a missing or damaged
student in one line (`StudentError`) instead of handing back weights that
are not the run's. What inference needs comes with the model: the class
names the data source gave (ImageFolder folder names, the `classes_file`,
iNaturalist categories, CIFAR's names, digits 0-9), the evaluation transform
of the run's data family (resize, crop, mean and std), the number of input
channels, the precision the student trained in, and the run's test accuracy
overall and per group (`evaluate/report.json`, if the run was evaluated).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from lfme import storage
from lfme.data import build_transform
from lfme.data.transforms import CIFAR_MEAN, CIFAR_STD, DIGITS_MEAN, DIGITS_STD, IMAGENET_MEAN, IMAGENET_STD
from lfme.models import build_model
from pipeline.manifest import Manifest
from rundir.config import Config, load_config
from rundir.layout import history_file, report_dir, run_config_file, student_file

NORMALISATION = {"digits": (DIGITS_MEAN, DIGITS_STD), "cifar": (CIFAR_MEAN, CIFAR_STD), "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}


class StudentError(FileNotFoundError):
    """The run has no usable student: missing, damaged, or the run is not a run directory."""


@dataclass
class TrainedStudent:
    """The student in eval mode with everything inference needs (see the module docstring)."""

    model: torch.nn.Module
    arch: str
    class_names: list[str]
    channels: int
    transform: str  # the data family: digits | cifar | imagenet
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    precision: str  # what the student trained in
    accuracy: dict[str, Any] | None  # evaluate/report.json's student section, None if not evaluated
    run_dir: str
    fingerprints: dict[str, str] = field(default_factory=dict)  # each done stage's fingerprint
    config: Config | None = None

    def run_config(self) -> Config:
        """The config of the run the student came from (`load_student` reads it; a student built by hand may have none)."""
        if self.config is None:
            raise ValueError(f"this student of {self.run_dir} came without its run's config; load it with load_student")
        return self.config

    @property
    def mode(self) -> str:
        """The PIL mode images are converted to before the transform."""
        return "L" if self.channels == 1 else "RGB"

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """One image as the student saw the test set: the run's evaluation transform, (channels, size, size)."""
        return build_transform(self.transform, train=False, image_size=self.image_size)(image.convert(self.mode))

    @torch.no_grad()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """float32 logits of a preprocessed batch (n, channels, size, size), on the model's device."""
        device = next(self.model.parameters()).device
        return self.model(batch.to(device)).float()

    def probabilities(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, C) class probabilities of PIL images."""
        batch = torch.stack([self.preprocess(image) for image in images])
        return torch.softmax(self.logits(batch), dim=1).cpu().numpy()


def checked_student_file(run_dir: str, manifest: Manifest) -> str:
    """`distill/student.pt` of the run, after checking it is the file the distill stage wrote (StudentError otherwise)."""
    location = student_file(run_dir)
    if not storage.exists(manifest.path):
        raise StudentError(f"{run_dir} is not a run directory (no {storage.name(manifest.path)})")
    record = manifest.record("distill")
    if record is None or record.status != "done":
        status = "never ran" if record is None else record.status
        raise StudentError(f"{run_dir} has no trained student: its distill stage {status}; run `lfme run` first")
    if not storage.exists(location):
        raise StudentError(f"{location} is missing; `lfme run` trains the student again")
    recorded = record.outputs.get("student.pt", {}).get("sha256")
    if recorded is not None and storage.file_sha256(location) != recorded:
        raise StudentError(f"{location} is damaged (its SHA-256 is not the one the distill stage recorded); `lfme run` trains it again")
    return location


def input_channels(state: dict[str, torch.Tensor]) -> int:
    """The input channels of a conv net's weights: the second dimension of its first 4-d weight."""
    return next(int(value.shape[1]) for value in state.values() if value.dim() == 4)


def load_student(run_dir: str, device: torch.device | str = "cpu") -> TrainedStudent:
    """The run's student in eval mode on `device`, with what inference needs (module docstring)."""
    run_dir = storage.absolute(run_dir)
    manifest = Manifest.load(run_dir)
    saved = storage.load_torch(checked_student_file(run_dir, manifest))
    channels = input_channels(saved["model"])
    model = build_model(saved["arch"], saved["num_classes"], in_channels=channels)
    model.load_state_dict(saved["model"])
    model = model.to(device).eval()
    config = load_config(run_config_file(run_dir))
    report = storage.join(report_dir(run_dir), "report.json")
    accuracy = storage.read_json(report)["student"] if storage.exists(report) else None
    history = storage.read_json(history_file(run_dir)) if storage.exists(history_file(run_dir)) else []
    mean, std = NORMALISATION[config.data.transform]
    return TrainedStudent(
        model=model,
        arch=saved["arch"],
        class_names=list(saved["class_names"]),
        channels=channels,
        transform=config.data.transform,
        image_size=config.data.image_size,
        mean=tuple(mean),
        std=tuple(std),
        precision=history[-1].get("precision", config.precision) if history else config.precision,
        accuracy=accuracy,
        run_dir=run_dir,
        fingerprints={stage: rec["fingerprint"] for stage, rec in manifest.data["stages"].items() if rec["status"] == "done"},
        config=config,
    )
