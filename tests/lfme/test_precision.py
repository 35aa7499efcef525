"""lfme.precision and its use in lfme.engine: what runs in which dtype, and the fallbacks that say so."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lfme import precision as precision_module
from lfme.engine import cross_entropy_loss, predict, seed_everything, train_epoch
from lfme.models import build_model
from lfme.precision import FP32, Precision, resolve


def test_fp32_is_plain_and_never_a_fallback():
    chosen, why = resolve("fp32", "cpu")
    assert chosen == Precision("fp32", "cpu") and why is None
    assert chosen.dtype is None and chosen.grad_scaler() is None


def test_bf16_on_a_cpu_with_native_kernels(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_has_fast_bf16", lambda: True)
    chosen, why = resolve("bf16", torch.device("cpu"))
    assert chosen.name == "bf16" and chosen.dtype is torch.bfloat16 and why is None


def test_bf16_on_a_cpu_without_native_kernels_falls_back_and_says_why(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_has_fast_bf16", lambda: False)
    chosen, why = resolve("bf16", "cpu")
    assert chosen.name == "fp32"
    assert "bf16" in why and "AVX512-BF16" in why and "fp32" in why and "\n" not in why


def test_fp16_is_for_cuda_only():
    chosen, why = resolve("fp16", "cpu")
    assert chosen.name == "fp32" and "CUDA" in why and "fp32" in why


def test_unknown_precision_is_named():
    with pytest.raises(ValueError, match="'fp8'"):
        resolve("fp8", "cpu")


def test_cpu_flags_are_read_from_cpuinfo(monkeypatch):
    """The flag check finds the bf16 flags among the others, and no flags means no bf16."""
    import builtins
    import io

    real_open = builtins.open

    def fake(text):
        def opener(path, *args, **kwargs):
            if path == "/proc/cpuinfo":
                return io.StringIO(text)
            return real_open(path, *args, **kwargs)

        return opener

    for text, expected in [
        ("flags\t\t: fpu sse avx512f avx512_bf16 avx512vl\n", True),
        ("flags\t\t: fpu amx_tile amx_bf16\n", True),
        ("flags\t\t: fpu sse avx2 avx512f\n", False),
    ]:
        precision_module.cpu_has_fast_bf16.cache_clear()
        monkeypatch.setattr(builtins, "open", fake(text))
        assert precision_module.cpu_has_fast_bf16() is expected, text
    precision_module.cpu_has_fast_bf16.cache_clear()


def _tiny_data(n=32, classes=4):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, 8, 8, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    ids = torch.arange(n)
    return [(images[i : i + 16], labels[i : i + 16], ids[i : i + 16]) for i in range(0, n, 16)]


def test_bf16_training_runs_convolutions_in_bf16_and_keeps_weights_and_loss_in_fp32():
    bf16 = Precision("bf16", "cpu")  # autocast on the CPU runs bf16 anywhere, only slower without AMX
    seed_everything(0)
    model = bf16.prepare(build_model("resnet8", 4))
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    seen = {}

    def record(module, inputs, out):  # returns None: a hook's return value would replace the output
        seen.setdefault("conv", out.dtype)

    model.conv1.register_forward_hook(record)
    losses = []

    def loss_fn(logits, batch):
        losses.append(logits.dtype)
        return cross_entropy_loss(logits, batch)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    stats = train_epoch(model, _tiny_data(), optimizer, loss_fn, torch.device("cpu"), precision=bf16)
    assert seen["conv"] == torch.bfloat16
    assert set(losses) == {torch.float32}  # the loss sees fp32 logits
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert torch.isfinite(torch.tensor(stats.loss))


def test_fp32_training_is_unchanged_by_the_precision_argument():
    """FP32 (the default) gives bit-identical results to a loop without autocast, written out here."""
    data = _tiny_data()

    def run(with_precision: bool):
        seed_everything(0)
        model = build_model("small_cnn", 4, in_channels=3)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        if with_precision:
            train_epoch(model, data, optimizer, cross_entropy_loss, torch.device("cpu"), precision=FP32)
        else:
            model.train()
            for images, labels, _ in data:
                loss = nn.functional.cross_entropy(model(images), labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return [p.detach().clone() for p in model.parameters()]

    for a, b in zip(run(True), run(False)):
        assert torch.equal(a, b)


def test_bf16_predictions_are_float32_and_close_to_fp32():
    seed_everything(0)
    model = build_model("small_cnn", 4, in_channels=3)
    data = _tiny_data()
    full = predict(model, data, torch.device("cpu"))
    half = predict(Precision("bf16", "cpu").prepare(model), data, torch.device("cpu"), Precision("bf16", "cpu"))
    assert half.logits.dtype == full.logits.dtype == "float32"
    # bf16 keeps 8 bits of mantissa: relative error of a few 1e-3 per product, summed over a small net
    assert abs(half.logits - full.logits).max() < 0.1 * abs(full.logits).max()
    assert (half.logits != full.logits).any()  # it did run in bf16


def test_on_cuda_bf16_needs_device_support_and_fp16_gets_a_loss_scaler(monkeypatch):
    """The CUDA branch, decided from what torch reports of the device (no GPU needed to check the decision)."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    chosen, why = resolve("bf16", "cuda")
    assert chosen == Precision("bf16", "cuda") and why is None
    chosen, why = resolve("fp16", "cuda")
    assert chosen == Precision("fp16", "cuda") and why is None and chosen.dtype is torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla V100")
    chosen, why = resolve("bf16", "cuda")
    assert chosen.name == "fp32" and "Tesla V100" in why and "fp32" in why
