"""Transforms per family: output shapes, normalisation, determinism of the test path."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from lfme.data import build_transform
from lfme.data.transforms import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN


def test_digits():
    image = Image.fromarray(np.full((8, 8), 255, dtype=np.uint8), mode="L")
    test = build_transform("digits", False, 8)(image)
    assert test.shape == (1, 8, 8) and torch.allclose(test, torch.ones(1, 8, 8))
    kinds = [type(t) for t in build_transform("digits", True, 8).transforms]
    assert kinds == [T.RandomCrop, T.ToTensor, T.Normalize]
    assert build_transform("digits", True, 8).transforms[0].padding == 1
    assert build_transform("digits", True, 8)(image).shape == (1, 8, 8)


def test_cifar():
    image = Image.new("RGB", (32, 32), (255, 0, 128))
    test = build_transform("cifar", False, 32)(image)
    expected = (torch.tensor([1.0, 0.0, 128 / 255]) - torch.tensor(CIFAR_MEAN)) / torch.tensor(CIFAR_STD)
    assert torch.allclose(test[:, 5, 5], expected, atol=1e-5)
    train = build_transform("cifar", True, 64)
    assert [type(t) for t in train.transforms] == [T.Resize, T.RandomCrop, T.RandomHorizontalFlip, T.ToTensor, T.Normalize]
    assert train.transforms[1].padding == 8
    assert train(Image.new("RGB", (64, 64))).shape == (3, 64, 64)


def test_cifar_resizes_other_sizes_and_leaves_the_native_size_untouched():
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    big = Image.fromarray(pixels)
    down = build_transform("cifar", False, 32)(big)
    expected = T.Normalize(CIFAR_MEAN, CIFAR_STD)(T.ToTensor()(big.resize((32, 32), Image.BILINEAR)))
    assert down.shape == (3, 32, 32) and torch.allclose(down, expected, atol=1e-5)
    native = build_transform("cifar", False, 64)(big)
    assert torch.allclose(native, T.Normalize(CIFAR_MEAN, CIFAR_STD)(T.ToTensor()(big)), atol=1e-6)


def test_imagenet():
    image = Image.new("RGB", (300, 400), (0, 0, 0))
    test = build_transform("imagenet", False, 224)
    out = test(image)
    assert out.shape == (3, 224, 224)
    assert test.transforms[0].size == 256
    assert torch.allclose(out[:, 0, 0], -torch.tensor(IMAGENET_MEAN) / torch.tensor([0.229, 0.224, 0.225]), atol=1e-5)
    train = build_transform("imagenet", True, 112)
    kinds = [type(t) for t in train.transforms]
    assert kinds == [T.RandomResizedCrop, T.RandomHorizontalFlip, T.ColorJitter, T.ToTensor, T.Normalize]
    assert train(image).shape == (3, 112, 112)


def test_unknown_family():
    with pytest.raises(ValueError, match="'mnist'"):
        build_transform("mnist", True, 28)


def test_cifar_makes_non_square_images_square():
    assert build_transform("cifar", False, 32)(Image.new("RGB", (48, 64))).shape == (3, 32, 32)
    assert build_transform("cifar", True, 32)(Image.new("RGB", (48, 64))).shape == (3, 32, 32)
