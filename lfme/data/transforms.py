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

from collections.abc import Callable
from typing import TYPE_CHECKING

from PIL import Image

from lfme.choices import FAMILIES, KEEPS_DECODED

if TYPE_CHECKING:
    from torchvision import transforms as T

# torchvision is imported where a transform is built, not with this module: its
# import pulls in torch._dynamo (1.5 s of CPU here, more under load), paid by
# every Ray worker that imports the data package, while the digits and cifar
# runs on decoded pixels never build a PIL transform (`BatchTransform`).

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DIGITS_MEAN = (0.5,)
DIGITS_STD = (0.5,)
# The OLTR / LFME ImageNet recipe's colour jitter (hue left alone).
IMAGENET_JITTER = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0}


def fixed_size_step(family: str, image_size: int) -> Callable[[Image.Image], Image.Image] | None:
    """The deterministic first step of `family`'s transforms (train and test alike), None if it has none.

    Keeping images decoded after this step (`ImageList.decoded`) gives the
    transforms the same pixels as decoding each time: on an image already at
    the size, the step is the identity.
    """
    if family not in KEEPS_DECODED:
        raise ValueError(f"transform family {family!r} has no fixed-size first step; families that have: {list(KEEPS_DECODED)}")
    if family != "cifar":
        return None
    from torchvision import transforms as T

    return T.Resize((image_size, image_size))


def crop_padding(family: str, image_size: int) -> int:
    """p of the padded crop of the digits and cifar families: each crop offset is uniform over 0..2p."""
    return 1 if family == "digits" else image_size // 8


def flips_in(family: str) -> bool:
    """Whether `family`'s training transform flips horizontally (digits do not: a mirrored digit is another glyph)."""
    return family != "digits"


def family_normalize(family: str) -> T.Normalize:
    from torchvision import transforms as T

    if family == "digits":
        return T.Normalize(DIGITS_MEAN, DIGITS_STD)
    if family == "cifar":
        return T.Normalize(CIFAR_MEAN, CIFAR_STD)
    if family == "imagenet":
        return T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    raise ValueError(f"unknown transform family {family!r}; expected one of {list(FAMILIES)}")


def normalized_tensor(family: str) -> T.Compose:
    """PIL image -> `family`'s normalised tensor, no other step (for pixels already cropped and flipped)."""
    from torchvision import transforms as T

    return T.Compose([T.ToTensor(), family_normalize(family)])


def test_steps(family: str, image_size: int) -> list:
    """The PIL steps of `family`'s test transform, before ToTensor and Normalize."""
    if family == "digits":
        return []
    if family == "cifar":
        return [fixed_size_step(family, image_size)]
    if family == "imagenet":
        from torchvision import transforms as T

        return [T.Resize(int(image_size * 256 / 224)), T.CenterCrop(image_size)]
    raise ValueError(f"unknown transform family {family!r}; expected one of {list(FAMILIES)}")


def build_transform(family: str, train: bool, image_size: int) -> T.Compose:
    """PIL image -> normalised tensor for `family` in FAMILIES; `train` adds the augmentation."""
    from torchvision import transforms as T

    normalize = family_normalize(family)
    if not train:
        return T.Compose([*test_steps(family, image_size), T.ToTensor(), normalize])
    if family == "digits":
        augment = [T.RandomCrop(image_size, padding=crop_padding(family, image_size))]
    elif family == "cifar":
        # (s, s), not s: an int keeps the aspect ratio and a non-square image would not batch.
        augment = [
            fixed_size_step(family, image_size),
            T.RandomCrop(image_size, padding=crop_padding(family, image_size)),
            T.RandomHorizontalFlip(),
        ]
    else:
        augment = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ColorJitter(**IMAGENET_JITTER)]
    return T.Compose([*augment, T.ToTensor(), normalize])
