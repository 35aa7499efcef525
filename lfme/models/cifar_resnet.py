"""CIFAR ResNets of He et al. 2016 (section 4.2), as used by LDAM-DRW and RIDE.

Depth = 6n + 2: a 3x3 stem with 16 channels, three stages of n BasicBlocks with
16, 32 and 64 channels (the second and third start with stride 2), global
average pooling and a linear classifier. Downsampling shortcuts are "option A":
parameter-free, subsample by 2 and zero-pad the new channels, so resnet32 has
the ~0.46M parameters the long-tailed CIFAR literature reports.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class PadShortcut(nn.Module):
    """Option-A shortcut: stride-2 subsampling plus zero channels.

    LDAM/RIDE write this as a LambdaLayer around a lambda; a module class does the
    same computation and, unlike a lambda, pickles (models cross process
    boundaries in the pipeline).
    """

    def __init__(self, in_planes: int, planes: int):
        super().__init__()
        extra = planes - in_planes
        self.pad_front = extra // 2
        self.pad_back = extra - self.pad_front

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::2, ::2]
        return F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or option-A) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module
        if stride != 1 or in_planes != planes:
            self.shortcut = PadShortcut(in_planes, planes)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem, three stages of `blocks_per_stage` BasicBlocks, global pool, linear."""

    def __init__(self, blocks_per_stage: int, num_classes: int, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, blocks_per_stage, stride=1)
        self.layer2 = self._stage(16, 32, blocks_per_stage, stride=2)
        self.layer3 = self._stage(32, 64, blocks_per_stage, stride=2)
        self.linear = nn.Linear(64, num_classes)
        # LDAM/RIDE initialise every conv and linear weight with kaiming_normal_
        # (fan_in, default gain) and keep PyTorch's default biases and BN.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def cifar_resnet(depth: int, num_classes: int, in_channels: int = 3) -> CifarResNet:
    """CIFAR ResNet of the given depth (6n + 2, n >= 1: 8, 20, 32, 44, 56, 110, ...)."""
    if depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 20, 32, 44, 56, 110), got {depth}")
    return CifarResNet((depth - 2) // 6, num_classes, in_channels)
