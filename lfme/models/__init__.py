"""Model zoo: one `build_model(arch, ...)` entry point for every backbone LFME uses.

Architectures:
- `small_cnn`: the default run's digits network (8x8 images, 1 channel).
- `resnet8|20|32|44|56|110`: CIFAR ResNets (CIFAR-10/100-LT).
- `resnet10`: ResNet-10 of ImageNet-LT / Places-LT work.
- `tv_resnet18|34|50|101|152`: torchvision ResNets (e.g. ResNet-152 on Places-LT).

Pretrained weights come only from a local torchvision-format state-dict file
(this never downloads): every backbone tensor must match, the checkpoint's
classifier (`fc.*`) is dropped and a fresh `num_classes`-way `fc` is kept.
"""

import os

import torch
import torch.nn as nn

from lfme.choices import ARCHITECTURES, CIFAR_DEPTHS, TORCHVISION_RESNETS
from lfme.models.cifar_resnet import cifar_resnet
from lfme.models.resnet10 import resnet10
from lfme.models.small_cnn import small_cnn

__all__ = ["ARCHITECTURES", "CIFAR_DEPTHS", "TORCHVISION_RESNETS", "build_model", "specialist_weights"]

# Backbones whose parameter names follow torchvision's ResNet (conv1, ..., fc).
_TORCHVISION_LAYOUT = ("resnet10",) + tuple(f"tv_{name}" for name in TORCHVISION_RESNETS)


def build_model(arch: str, num_classes: int, in_channels: int = 3, pretrained: str | None = None) -> nn.Module:
    """Build `arch` with a `num_classes`-way classifier for `in_channels`-channel images.

    `pretrained` (torchvision-layout archs only) is the path of a local state
    dict; it is loaded into the 3-channel backbone before conv1 is swapped for
    `in_channels != 3`, so in that case conv1 is freshly initialised.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHITECTURES)}")
    if pretrained is not None and arch not in _TORCHVISION_LAYOUT:
        raise ValueError(
            f"pretrained weights are supported only for {', '.join(_TORCHVISION_LAYOUT)}, not {arch!r}"
        )
    if arch == "small_cnn":
        return small_cnn(num_classes, in_channels)
    if arch not in _TORCHVISION_LAYOUT:
        return cifar_resnet(int(arch[len("resnet"):]), num_classes, in_channels)

    if arch == "resnet10":
        model = resnet10(num_classes)
    else:
        # torchvision is imported when one of its models is built: its import pulls
        # in torch._dynamo (1.5 s of CPU here), which every Ray worker importing
        # this package would pay for the small CNN and the CIFAR ResNets too.
        import torchvision

        model = getattr(torchvision.models, arch[len("tv_"):])(weights=None, num_classes=num_classes)

    if pretrained is not None:
        load_backbone(model, pretrained)
    if in_channels != 3:
        old = model.conv1
        model.conv1 = nn.Conv2d(
            in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False
        )
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


def load_backbone(model: nn.Module, path: str) -> None:
    """Load every non-`fc` tensor of the state dict at `path` into `model`, strictly.

    The classifier is skipped because the pretraining task's classes (e.g.
    ImageNet's 1000) are not ours; anything else missing, extra or of another
    shape means the checkpoint is for a different backbone, which must not pass
    silently.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    problems = [f"missing {k}" for k in own if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in own]
    problems += [
        f"shape {k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if problems:
        shown = "; ".join(problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ValueError(f"pretrained weights {path} do not match the backbone: {shown}{more}")
    model.load_state_dict(state, strict=False)


def specialist_weights(joint_state: dict[str, torch.Tensor], expert: nn.Module, classes) -> dict[str, torch.Tensor]:
    """A state dict for `expert` (a len(classes)-way model) from a C-way model's: a specialist's starting point.

    Every tensor of the same shape is copied; a tensor whose first dimension is
    C in the joint model and len(classes) in the expert (the classifier's
    weight and bias) keeps the rows of `classes`, so the expert starts out
    predicting among its classes exactly as the joint model ranks them
    (Hinton et al. 2015, specialists initialised from the generalist).
    Anything else that differs is an error: the two are not the same
    architecture.
    """
    index = torch.as_tensor(list(classes), dtype=torch.long)
    out = {}
    for name, target in expert.state_dict().items():
        if name not in joint_state:
            raise ValueError(f"the joint model has no {name!r}: it is not a {type(expert).__name__}")
        source = joint_state[name]
        if source.shape == target.shape:
            out[name] = source.clone()
        elif source.dim() >= 1 and source.shape[1:] == target.shape[1:] and target.shape[0] == index.numel():
            out[name] = source.index_select(0, index).clone()
        else:
            raise ValueError(f"{name}: the joint model's {tuple(source.shape)} does not give the expert's {tuple(target.shape)}")
    return out
