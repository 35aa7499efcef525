"""ResNet-10 of the ImageNet-LT literature (OLTR, classifier-balancing).

Those papers use a torchvision-layout ResNet with BasicBlocks and one block per
stage ([1, 1, 1, 1]): 7x7 stem, max pool, 64/128/256/512 channels with 1x1
conv-BN downsampling shortcuts, 512-d pooled features and an `fc` classifier.
torchvision's ResNet class builds exactly that, and sharing it keeps the
parameter names (`conv1`, `layer1.0.conv1`, `fc`, ...) identical to the
torchvision ResNets, so state dicts load the same way for all of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torchvision.models.resnet import ResNet


def resnet10(num_classes: int) -> ResNet:
    """ResNet-10 with a freshly initialised `num_classes`-way `fc`."""
    from torchvision.models.resnet import BasicBlock, ResNet  # imported when built: lfme.models says why

    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes)
