"""The values a config may choose for what `lfme` implements, and the files it reads, importable without torch.

The config is validated wherever a run is inspected (`lfme status`, `lfme
verify`, a second driver refused by the lease), and those commands must not pay
for importing torch and torchvision (seconds, tens under load). So the names
live here, and the modules that implement them (`lfme.precision`,
`lfme.data.transforms`, `lfme.models`) import them from here.
"""

from __future__ import annotations

from typing import Literal, get_args

# The arithmetic a run may train and infer in (lfme.precision). The Literal is the config's type, the tuple its values.
PrecisionName = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(PrecisionName)

# Per-image transform families (lfme.data.transforms). The Literal is the config's type, the tuple its values.
Family = Literal["digits", "cifar", "imagenet"]
FAMILIES: tuple[str, ...] = get_args(Family)
# Families whose every image can be kept decoded: their transforms start with a
# deterministic step to a fixed size (or none), so the pixels after that step
# are the same every epoch. imagenet crops the full-size image at random.
KEEPS_DECODED = ("digits", "cifar")

CIFAR_DEPTHS = (8, 20, 32, 44, 56, 110)
TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
ARCHITECTURES = (
    ("small_cnn",)
    + tuple(f"resnet{d}" for d in CIFAR_DEPTHS)
    + ("resnet10",)
    + tuple(f"tv_{name}" for name in TORCHVISION_RESNETS)
)

# The image file extensions torchvision's ImageFolder accepts, so the same
# folder yields the same list (lfme.data.sources reads them, rundir.inputs signs them).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
