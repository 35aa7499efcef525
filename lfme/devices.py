"""Host-to-device copies that do not make the host wait.

A plain `tensor.to("cuda")` from ordinary (pageable) host memory returns only
once the copy is done, so a training step that copies a few per-batch values
(teacher rows, instance weights, crop offsets) waits for the GPU each time.
From pinned memory with `non_blocking=True` the copy is queued on the stream
like any kernel and the host runs ahead. On the CPU this is a plain `.to`.
"""

from __future__ import annotations

import torch


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """`tensor` on `device`, queued without waiting when the copy goes to a GPU."""
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


class DeviceCopies:
    """Keeps one copy per device of tensors that change rarely (class indices, per-epoch weights)."""

    def __init__(self) -> None:
        self._copies: dict[tuple[str, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, name: str, tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
        """`tensor` on `device`, copied again only when a different tensor is passed under `name`."""
        key = (name, torch.device(device))
        held = self._copies.get(key)
        if held is None or held[0] is not tensor:
            held = (tensor, to_device(tensor, device))
            self._copies[key] = held
        return held[1]
