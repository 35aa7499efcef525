"""On a CUDA device: the training loop, precision, live teachers and the batched augmentation (the lfme layer).

The tests marked `gpu` need CUDA and are skipped, with the reason, where
torch sees none (CI, this project's CPU machines); `benchmarks/gpu_check.sh`
runs them on a GPU machine (`pytest -m gpu`). Each takes seconds.

"No per-step host sync": the loop must queue work on the device and never
wait for it (lfme.engine.train_epoch reads its sums once, after the last
batch). torch's sync debug mode (`torch.cuda.set_sync_debug_mode("warn")`)
warns at every operation that makes the host wait for the device (a
blocking copy to or from it, `.item()`, `nonzero`, ...); it is switched on
only while the batches are being consumed, so the epoch's one read at the
end is not counted. Each warning's file and line say where the wait is.

The records the GPU check writes (benchmarks/gpu_check.py) are checked without
a GPU in tests/benchmarks/test_gpu_check.py.
"""

from __future__ import annotations

import collections
import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from lfme.data import BatchTransform, DeviceBatches
from lfme.engine import cross_entropy_loss, make_optimizer, predict, seed_everything, train_epoch
from lfme.losses import DistillationLoss
from lfme.models import build_model
from lfme.precision import resolve
from lfme.subsets import Subset
from lfme.teachers import CachedTeachers, LiveTeachers, teacher_rows

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(
    not CUDA, reason="needs CUDA: torch.cuda.is_available() is False (on a GPU machine: bash benchmarks/gpu_check.sh)"
)
C = 10
SUBSETS = [Subset("many", (0, 3, 6, 9)), Subset("medium", (1, 4, 7)), Subset("few", (2, 5, 8))]  # not contiguous


def prototype_batches(n_batches: int, batch_size: int, channels: int = 1, size: int = 8, seed: int = 0):
    """Batches of C separable classes: a fixed random image per class plus noise. (images, labels, sample_ids), CPU."""
    gen = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(C, channels, size, size, generator=gen)
    batches = []
    for b in range(n_batches):
        labels = torch.randint(0, C, (batch_size,), generator=gen)
        images = prototypes[labels] + 0.5 * torch.randn(batch_size, channels, size, size, generator=gen)
        batches.append((images, labels, torch.arange(b * batch_size, (b + 1) * batch_size)))
    return batches


def synchronizing(batches, caught: list):
    """Yield `batches` with the sync debug mode on while the loop consumes them; `caught` gets each sync's location."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield from batches
        finally:
            torch.cuda.set_sync_debug_mode("default")
    caught += [f"{w.filename}:{w.lineno}" for w in records if "synchronizing" in str(w.message)]


def syncs_per_step(caught: list[str], steps: int) -> str:
    where = collections.Counter(caught)
    return f"{len(caught) / steps:.1f} syncs per step: " + ", ".join(f"{place} x{n}" for place, n in where.most_common())


# ----------------------------------------------------------------------------- the training loop


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("wish, max_syncs_per_step", [("fp32", 0), ("bf16", 0), ("fp16", 1)])
def test_train_epoch_on_cuda_learns_and_does_not_wait_for_the_device(wish, max_syncs_per_step):
    """Loss falls over a few epochs; inside the loop no host sync, but fp16's GradScaler (its found-inf check reads
    one value per step: torch.amp.GradScaler.step, the price of loss scaling)."""
    seed_everything(0)
    device = torch.device("cuda")
    precision, fallback = resolve(wish, device)
    assert precision.name == wish, fallback
    model = precision.prepare(build_model("small_cnn", C, in_channels=1).to(device))
    optimizer = make_optimizer(model, lr=0.05, momentum=0.9, weight_decay=5e-4)
    scaler = precision.grad_scaler()
    batches = prototype_batches(10, 64)
    losses = [train_epoch(model, batches, optimizer, cross_entropy_loss, device, precision=precision, scaler=scaler).loss]
    caught: list[str] = []
    stats = train_epoch(model, synchronizing(batches, caught), optimizer, cross_entropy_loss, device, precision=precision, scaler=scaler)
    losses.append(stats.loss)
    for _ in range(3):
        stats = train_epoch(model, batches, optimizer, cross_entropy_loss, device, precision=precision, scaler=scaler)
        losses.append(stats.loss)
    assert len(caught) <= max_syncs_per_step * len(batches), syncs_per_step(caught, len(batches))
    assert losses[-1] < 0.5 * losses[0], losses
    assert stats.accuracy > 0.9 and stats.samples == 640


@pytest.mark.gpu
@needs_cuda
def test_distill_step_on_cuda_does_not_wait_for_the_device():
    """The distill stage's loss as the stage builds it (cached teacher rows, SpIS weights, subset classes on the CPU)."""
    seed_everything(0)
    device = torch.device("cuda")
    batches = prototype_batches(8, 32)
    ids = torch.cat([b[2] for b in batches]).numpy()
    labels = torch.cat([b[1] for b in batches]).numpy()
    rows = teacher_rows(ids, labels, np.random.default_rng(0).normal(size=(len(ids), C)).astype(np.float32), SUBSETS)
    loss_fn = DistillationLoss(CachedTeachers(rows), rows, [torch.tensor(s.classes) for s in SUBSETS], 2.0)
    loss_fn.expert_weights = torch.tensor([1.0, 0.8, 0.5])
    loss_fn.instance_weights = np.linspace(0.5, 1.0, len(ids)).astype(np.float32)
    model = build_model("small_cnn", C, in_channels=1).to(device)
    optimizer = make_optimizer(model, lr=0.05, momentum=0.9, weight_decay=5e-4)
    first = train_epoch(model, batches, optimizer, loss_fn, device)
    caught: list[str] = []
    second = train_epoch(model, synchronizing(batches, caught), optimizer, loss_fn, device)
    assert np.isfinite(first.loss) and np.isfinite(second.loss) and {"ce", "kd"} <= set(second.parts)
    assert not caught, syncs_per_step(caught, len(batches))


# ----------------------------------------------------------------------------- precision


@pytest.mark.gpu
@needs_cuda
def test_precision_resolves_on_the_real_device():
    bf16, why = resolve("bf16", torch.device("cuda", 0))
    assert torch.cuda.is_bf16_supported(), "a GPU without bf16: the checks below expect one (Ampere or newer)"
    assert bf16.name == "bf16" and bf16.device_type == "cuda" and why is None and bf16.grad_scaler() is None
    fp16, why = resolve("fp16", "cuda")
    assert fp16.name == "fp16" and why is None and isinstance(fp16.grad_scaler(), torch.amp.GradScaler)
    fp32, why = resolve("fp32", "cuda")
    assert fp32.name == "fp32" and why is None

    seed_everything(0)
    reference = build_model("resnet8", C).cuda().eval()
    images = torch.randn(16, 3, 32, 32, device="cuda")
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        expected = reference(images)
    for chosen, dtype in ((bf16, torch.bfloat16), (fp16, torch.float16)):
        model = chosen.prepare(copy.deepcopy(reference))
        assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
        assert model.conv1.weight.dtype == torch.float32  # weights stay float32 under autocast
        batch = chosen.inputs(images)
        assert batch.is_contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), chosen.autocast():
            out = model(batch)
        assert out.dtype == dtype
        scale = expected.abs().max().item()
        assert (out.float() - expected).abs().max().item() < 0.05 * scale, chosen.name


@pytest.mark.gpu
@needs_cuda
def test_predict_in_bf16_on_cuda_gives_float32_logits_near_fp32():
    seed_everything(0)
    model = build_model("resnet8", C).cuda()
    batches = [(torch.randn(32, 3, 32, 32), torch.zeros(32, dtype=torch.long), torch.arange(32))]
    fp32 = predict(model, batches, torch.device("cuda"))
    bf16, _ = resolve("bf16", "cuda")
    low = predict(bf16.prepare(model), batches, torch.device("cuda"), bf16)
    assert low.logits.dtype == np.float32 and low.logits.shape == (32, C)
    assert np.abs(low.logits - fp32.logits).max() < 0.05 * np.abs(fp32.logits).max()


# ----------------------------------------------------------------------------- live teachers


def three_experts(seed: int = 0) -> list[nn.Module]:
    seed_everything(seed)
    return [build_model("resnet8", len(s.classes)).eval() for s in SUBSETS]


@pytest.mark.gpu
@needs_cuda
def test_live_teachers_on_cuda_equal_the_cpu_result():
    images = torch.randn(24, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    on_cpu = LiveTeachers(three_experts(), SUBSETS, C)
    expected = on_cpu(images)
    on_gpu = copy.deepcopy(on_cpu).cuda()
    assert all(buffer.is_cuda for buffer in on_gpu.class_indices())
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # TF32 convolutions would differ by ~1e-3
        got = on_gpu(images.cuda())
    assert got.is_cuda and got.dtype == torch.float32
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-4, atol=1e-4)

    bf16, _ = resolve("bf16", "cuda")
    experts = [bf16.prepare(e) for e in copy.deepcopy(three_experts())]
    live = LiveTeachers(experts, SUBSETS, C, bf16).cuda()
    from lfme.engine import Batch

    targets = live.targets(Batch(bf16.inputs(images.cuda()), torch.zeros(24, dtype=torch.long, device="cuda"), torch.arange(24)))
    assert targets.dtype == torch.float32
    assert (targets.cpu() - expected).abs().max() < 0.05 * expected.abs().max()


# ----------------------------------------------------------------------------- batched augmentation


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("family, size", [("cifar", 32), ("digits", 8)])
def test_batch_transform_on_cuda_equals_the_cpu(family, size):
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (16, size, size, 3) if family == "cifar" else (16, size, size), dtype=torch.uint8, generator=gen)
    train = BatchTransform(family, train=True, image_size=size)
    draws = train.draw(len(pixels))
    expected = train.apply(pixels, *draws)
    got = train.apply(pixels.cuda(), *draws)
    assert got.is_cuda and got.dtype == torch.float32 and got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got.cpu(), expected)
    evaluate = BatchTransform(family, train=False, image_size=size)
    torch.testing.assert_close(evaluate(pixels.cuda()).cpu(), evaluate(pixels))


@pytest.mark.gpu
@needs_cuda
def test_batched_augmentation_feeds_train_epoch_on_cuda_without_waiting():
    """decode_once's path (configs/cifar10-lt.yaml): uint8 batches moved to the GPU, augmented there, trained on."""
    seed_everything(0)
    device = torch.device("cuda")
    gen = torch.Generator().manual_seed(0)
    loader = []
    for b in range(6):
        labels = torch.randint(0, C, (32,), generator=gen)
        pixels = (labels[:, None, None, None] * 25 + torch.randint(0, 20, (32, 32, 32, 3), generator=gen)).to(torch.uint8)
        loader.append((pixels.pin_memory(), labels, torch.arange(b * 32, (b + 1) * 32)))
    batches = DeviceBatches(loader, BatchTransform("cifar", train=True, image_size=32), device)
    model = build_model("resnet8", C).to(device).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, lr=0.05, momentum=0.9, weight_decay=5e-4)
    first = train_epoch(model, batches, optimizer, cross_entropy_loss, device)
    caught: list[str] = []
    second = train_epoch(model, synchronizing(batches, caught), optimizer, cross_entropy_loss, device)
    assert np.isfinite(first.loss) and second.samples == 6 * 32
    assert not caught, syncs_per_step(caught, len(loader))
