"""Numeric precision of a model's arithmetic: fp32, bf16 or fp16 autocast, and channels-last.

`precision: bf16` runs the convolutions and matrix products of forward and
backward in bfloat16 under `torch.autocast`, keeping the weights, the
optimiser state and the loss in float32. bf16 has fp32's exponent range, so it
needs no loss scaling; its 8-bit mantissa is what costs accuracy, if anything
does, and `docs/RESULTS.md` measures that on CIFAR-10-LT. On CPUs with AMX or
AVX512-BF16 (oneDNN's bf16 kernels) a ResNet trains 2-3x faster in bf16 than
in fp32; on CPUs without them oneDNN emulates bf16 and it is slower, so there
we run fp32 and say so. `fp16` is for CUDA only (CPU autocast has no fast fp16
convolutions): fp16's narrow range needs a `torch.amp.GradScaler`.

Conv nets run in channels-last memory format under bf16/fp16: oneDNN and
cuDNN's reduced-precision convolution kernels are NHWC kernels, and an NCHW
input would be reordered before and after every convolution. In fp32 the
layout is left as it is, which keeps fp32 results bit-identical to before.

Where the hardware cannot do what the config asks, `resolve` returns fp32 with
a one-line reason for the caller to print: never a silent change. Precision
changes the numbers a stage produces, so it is part of the fingerprint of
every stage that runs a model (`pipeline/graph.py`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from lfme.choices import PRECISIONS

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True on CPUs whose oneDNN has native bf16 kernels (AVX512-BF16 or AMX), read from /proc/cpuinfo.

    Read from the CPU flags rather than `torch.backends.mkldnn`: torch reports
    bf16 "supported" on any AVX512 CPU, where it is emulated and slower than fp32.
    """
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:  # not Linux: no flags to read, assume no native bf16
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


@dataclass(frozen=True)
class Precision:
    """What a stage's model runs in, once the config's wish met the hardware."""

    name: str  # the precision actually used: fp32, bf16 or fp16
    device_type: str  # "cpu" or "cuda"

    @property
    def dtype(self) -> torch.dtype | None:
        return _DTYPES.get(self.name)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context to run a model's forward in (a no-op in fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A loss scaler for fp16 (gradients underflow in fp16 without one); None otherwise."""
        return torch.amp.GradScaler(self.device_type) if self.name == "fp16" else None

    def prepare(self, model: nn.Module) -> nn.Module:
        """The model in the memory format its reduced-precision kernels want (see the module docstring)."""
        if self.dtype is not None and any(isinstance(m, nn.Conv2d) for m in model.modules()):
            return model.to(memory_format=torch.channels_last)
        return model

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """A batch in the layout `prepare` gave the model."""
        if self.dtype is not None and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images


FP32 = Precision("fp32", "cpu")  # plain float32; its autocast and layout are no-ops on any device


def resolve(requested: str, device: torch.device | str) -> tuple[Precision, str | None]:
    """The precision to run `requested` in on `device`, and a one-line reason when it had to be fp32."""
    device_type = torch.device(device).type
    if requested not in PRECISIONS:
        raise ValueError(f"precision: unknown value {requested!r} (valid: {', '.join(PRECISIONS)})")
    fallback = Precision("fp32", device_type)
    if requested == "fp32":
        return fallback, None
    if device_type == "cuda":
        if requested == "bf16" and not torch.cuda.is_bf16_supported():
            return fallback, f"precision bf16: {torch.cuda.get_device_name()} has no bf16 support, running in fp32"
        return Precision(requested, device_type), None
    if requested == "fp16":
        return fallback, "precision fp16: for CUDA devices only (a CPU has no fast fp16 convolutions), running in fp32"
    if not cpu_has_fast_bf16():
        return fallback, "precision bf16: this CPU has neither AVX512-BF16 nor AMX (bf16 would be emulated, slower than fp32), running in fp32"
    return Precision("bf16", device_type), None
