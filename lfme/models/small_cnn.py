"""A small CNN for the default run's 8x8 digits images.

Three 3x3 conv-BN-ReLU layers (32, 64, 128 channels) with one 2x2 max pool,
global average pooling and a linear classifier: ~0.1M parameters, so experts
and the student train in seconds on CPU while still being a real conv net.
BatchNorm lets it train fast at a high learning rate.
"""

import torch.nn as nn


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def small_cnn(num_classes: int, in_channels: int = 1) -> nn.Sequential:
    """conv32 - conv64 - maxpool - conv128 - global avg pool - fc."""
    return nn.Sequential(
        *_conv_bn_relu(in_channels, 32),
        *_conv_bn_relu(32, 64),
        nn.MaxPool2d(2),
        *_conv_bn_relu(64, 128),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, num_classes),
    )
