"""Image transforms per data-set family, as the reference recipes use them.

- digits: 8x8 grayscale; a 1-pixel padded crop is the only augmentation that keeps
  the digit recognisable at that size.
- cifar: the standard CIFAR recipe (padded crop of image_size // 8, flip); also
  used for 64x64 Tiny-ImageNet. Images of another size are first resized to
  image_size (Tiny-ImageNet at 32x32 for CPU schedules); at the native size the
  resize is the identity (PIL returns a copy).
- imagenet: the ImageNet-LT / Places-LT recipe of the OLTR / LFME code
  (RandomResizedCrop, flip, ColorJitter 0.4; test: resize to 256/224 of the crop,
  then center crop).
"""

from __future__ import annotations

from typing import Callable

from PIL import Image
from torchvision import transforms as T

from lfme.choices import FAMILIES, KEEPS_DECODED

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DIGITS_MEAN = (0.5,)
DIGITS_STD = (0.5,)


def fixed_size_step(family: str, image_size: int) -> Callable[[Image.Image], Image.Image] | None:
    """The deterministic first step of `family`'s transforms (train and test alike), None if it has none.

    Keeping images decoded after this step (`ImageList.decoded`) gives the
    transforms the same pixels as decoding each time: on an image already at
    the size, the step is the identity.
    """
    if family not in KEEPS_DECODED:
        raise ValueError(f"transform family {family!r} has no fixed-size first step; families that have: {list(KEEPS_DECODED)}")
    return T.Resize((image_size, image_size)) if family == "cifar" else None


def build_transform(family: str, train: bool, image_size: int) -> T.Compose:
    """PIL image -> normalised tensor for `family` in FAMILIES; `train` adds the augmentation."""
    if family == "digits":
        augment = [T.RandomCrop(image_size, padding=1)]
        resize = []
        normalize = T.Normalize(DIGITS_MEAN, DIGITS_STD)
    elif family == "cifar":
        # (s, s), not s: an int keeps the aspect ratio and a non-square image would not batch.
        square = fixed_size_step(family, image_size)
        augment = [square, T.RandomCrop(image_size, padding=image_size // 8), T.RandomHorizontalFlip()]
        resize = [square]
        normalize = T.Normalize(CIFAR_MEAN, CIFAR_STD)
    elif family == "imagenet":
        augment = [
            T.RandomResizedCrop(image_size),
            T.RandomHorizontalFlip(),
            T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0),
        ]
        resize = [T.Resize(int(image_size * 256 / 224)), T.CenterCrop(image_size)]
        normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    else:
        raise ValueError(f"unknown transform family {family!r}; expected one of {list(FAMILIES)}")
    return T.Compose([*(augment if train else resize), T.ToTensor(), normalize])
