"""Transforms per family: output shapes, normalisation, determinism of the test path; the batched transforms against them."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from lfme.data import BatchTransform, build_transform
from lfme.data.transforms import CIFAR_MEAN, CIFAR_STD, DIGITS_MEAN, DIGITS_STD, IMAGENET_MEAN


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


# --------------------------------------------------------------------------- batched transforms on uint8 tensors


def _reference(pixels: np.ndarray, family: str, top: int, left: int, flip: bool) -> torch.Tensor:
    """torchvision's functional ops on one PIL image: zero pad, crop, flip, to_tensor, normalize."""
    size, padding = pixels.shape[0], 1 if family == "digits" else pixels.shape[0] // 8
    mean, std = (DIGITS_MEAN, DIGITS_STD) if family == "digits" else (CIFAR_MEAN, CIFAR_STD)
    image = TF.crop(TF.pad(Image.fromarray(pixels), padding, fill=0), top, left, size, size)
    return TF.normalize(TF.to_tensor(TF.hflip(image) if flip else image), mean, std)


@pytest.mark.parametrize("family, size, channels", [("cifar", 32, 3), ("cifar", 16, 3), ("digits", 8, 1)])
def test_batched_crop_and_flip_equal_torchvision_per_image(family, size, channels):
    rng = np.random.default_rng(size)
    shape = (8, size, size, channels) if channels > 1 else (8, size, size)
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    last = 2 * (1 if family == "digits" else size // 8)
    tops = torch.tensor([0, last, 0, last, 1, last - 1, 2, 1])
    lefts = torch.tensor([0, 0, last, last, last - 1, 1, 1, 2])
    flips = torch.tensor([False, True, True, False, True, False, True, False])
    out = BatchTransform(family, True, size).apply(torch.from_numpy(pixels), tops, lefts, flips)
    assert out.shape == (8, channels, size, size) and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)
    for i in range(8):
        expected = _reference(pixels[i], family, int(tops[i]), int(lefts[i]), bool(flips[i]))
        torch.testing.assert_close(out[i], expected, rtol=0, atol=1e-6)


def test_batched_offsets_are_uniform_and_independent_and_flips_fair():
    scipy_stats = pytest.importorskip("scipy.stats")
    n = 20_000
    torch.manual_seed(0)
    tops, lefts, flips = BatchTransform("cifar", True, 32).draw(n)
    assert tops.shape == lefts.shape == flips.shape == (n,)
    for offsets in (tops, lefts):
        counts = torch.bincount(offsets, minlength=9)
        assert offsets.min() >= 0 and len(counts) == 9 and (counts > 0).all()  # exactly {0..2p}, p = 32 // 8
        assert scipy_stats.chisquare(counts.numpy()).pvalue > 1e-3
    # Independent of each other: all 81 (top, left) pairs equally likely.
    pairs = torch.bincount(tops * 9 + lefts, minlength=81)
    assert scipy_stats.chisquare(pairs.numpy()).pvalue > 1e-3
    # Flip rate 1/2 within 4 binomial standard deviations, sqrt(n / 4).
    assert abs(int(flips.sum()) - n / 2) < 4 * (n / 4) ** 0.5

    tops, lefts, flips = BatchTransform("digits", True, 8).draw(n)
    assert set(tops.tolist()) == set(lefts.tolist()) == {0, 1, 2}
    assert not flips.any()  # digits never flip, as build_transform


def test_batched_train_call_draws_from_the_global_torch_generator():
    pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8))
    transform = BatchTransform("cifar", True, 32)
    torch.manual_seed(5)
    drawn = transform.draw(16)
    torch.manual_seed(5)
    assert torch.equal(transform(pixels), transform.apply(pixels, *drawn))
    torch.manual_seed(6)
    assert all(not torch.equal(a, b) for a, b in zip(transform.draw(16), drawn))  # tops, lefts and flips all follow the seed


@pytest.mark.parametrize("family, size, mode", [("cifar", 32, "RGB"), ("cifar", 16, "RGB"), ("digits", 8, "L")])
def test_batched_eval_is_to_tensor_and_normalize(family, size, mode):
    shape = (5, size, size, 3) if mode == "RGB" else (5, size, size)
    pixels = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    state = torch.get_rng_state()
    out = BatchTransform(family, False, size)(torch.from_numpy(pixels))
    assert torch.equal(torch.get_rng_state(), state)  # evaluation draws nothing
    assert out.shape == (5, 3 if mode == "RGB" else 1, size, size) and out.is_contiguous(memory_format=torch.channels_last)
    mean, std = (DIGITS_MEAN, DIGITS_STD) if family == "digits" else (CIFAR_MEAN, CIFAR_STD)
    expected = torch.stack([TF.normalize(TF.to_tensor(Image.fromarray(p, mode=mode)), mean, std) for p in pixels])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(out, torch.stack([build_transform(family, False, size)(Image.fromarray(p)) for p in pixels]), rtol=0, atol=1e-6)


def test_batched_transform_rejects_what_it_cannot_transform():
    with pytest.raises(ValueError, match="'imagenet'"):
        BatchTransform("imagenet", True, 224)
    with pytest.raises(ValueError, match="uint8"):
        BatchTransform("cifar", True, 32)(torch.zeros(2, 32, 32, 3))
    with pytest.raises(ValueError, match="32x32"):
        BatchTransform("cifar", False, 32)(torch.zeros(2, 40, 40, 3, dtype=torch.uint8))
