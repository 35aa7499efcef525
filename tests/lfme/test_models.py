"""Tests for lfme.models: shapes, parameter counts against hand computation,
pretrained loading, error messages and a quick digits training run."""

import pickle
import time

import pytest
import torch
import torch.nn.functional as F
import torchvision

from lfme.models import ARCHITECTURES, build_model
from lfme.models.cifar_resnet import cifar_resnet


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def conv(cin, cout, k):
    return cin * cout * k * k  # bias-free convs throughout


def bn(c):
    return 2 * c  # weight + bias


def fc(cin, cout):
    return cin * cout + cout


def cifar_count(depth, num_classes):
    """Hand count: stem, 3 stages of n blocks, option-A shortcuts have no params."""
    n = (depth - 2) // 6
    total = conv(3, 16, 3) + bn(16)
    cin = 16
    for planes in (16, 32, 64):
        for _ in range(n):
            total += conv(cin, planes, 3) + bn(planes) + conv(planes, planes, 3) + bn(planes)
            cin = planes
    return total + fc(64, num_classes)


def basic_resnet_count(blocks, num_classes):
    """Hand count of a torchvision-layout BasicBlock ResNet with 1x1 conv-BN downsampling."""
    total = conv(3, 64, 7) + bn(64)
    cin = 64
    for planes, n in zip((64, 128, 256, 512), blocks):
        for _ in range(n):
            total += conv(cin, planes, 3) + bn(planes) + conv(planes, planes, 3) + bn(planes)
            if cin != planes:
                total += conv(cin, planes, 1) + bn(planes)
            cin = planes
    return total + fc(512, num_classes)


def test_architectures_lists_every_family():
    assert ARCHITECTURES == (
        "small_cnn",
        "resnet8", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
        "resnet10",
        "tv_resnet18", "tv_resnet34", "tv_resnet50", "tv_resnet101", "tv_resnet152",
    )


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_output_shape(arch):
    torch.manual_seed(0)
    if arch == "small_cnn":
        in_channels, size = 1, 8
    elif arch.startswith("tv_") or arch == "resnet10":
        in_channels, size = 3, 64
    else:
        in_channels, size = 3, 32
    model = build_model(arch, num_classes=7, in_channels=in_channels).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", ["resnet20", "resnet10", "tv_resnet18", "tv_resnet50"])
def test_other_input_channels(arch):
    size = 32 if arch == "resnet20" else 64
    model = build_model(arch, num_classes=5, in_channels=1).eval()
    assert model.conv1.in_channels == 1
    with torch.no_grad():
        assert model(torch.randn(2, 1, size, size)).shape == (2, 5)


@pytest.mark.parametrize("depth", [8, 20, 32, 44, 56, 110])
def test_cifar_resnet_param_count(depth):
    assert n_params(cifar_resnet(depth, 10)) == cifar_count(depth, 10)


def test_cifar_resnet_reference_sizes():
    # Sizes reported by He et al. 2016 (Table 6) and the LDAM-DRW/RIDE code.
    assert n_params(cifar_resnet(32, 10)) == 464_154
    assert round(n_params(cifar_resnet(32, 10)) / 1e6, 2) == 0.46
    assert round(n_params(cifar_resnet(20, 10)) / 1e6, 2) == 0.27


def test_cifar_resnet_shortcut_is_option_a():
    block = cifar_resnet(20, 10).layer2[0]
    assert sum(p.numel() for p in block.shortcut.parameters()) == 0
    x = torch.randn(2, 16, 8, 8)
    out = block.shortcut(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert (out[:, :8] == 0).all() and (out[:, 24:] == 0).all()


def test_cifar_resnet_pickles():
    model = cifar_resnet(20, 10).eval()
    clone = pickle.loads(pickle.dumps(model))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), clone(x))


@pytest.mark.parametrize("depth", [7, 9, 21, 2, 0])
def test_cifar_resnet_invalid_depth(depth):
    with pytest.raises(ValueError, match=rf"got {depth}\b"):
        cifar_resnet(depth, 10)


def test_resnet10_param_count_and_features():
    model = build_model("resnet10", num_classes=1000)
    assert n_params(model) == basic_resnet_count([1, 1, 1, 1], 1000)
    assert model.fc.in_features == 512
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]


def test_tv_resnet18_param_count():
    assert n_params(build_model("tv_resnet18", num_classes=10)) == basic_resnet_count([2, 2, 2, 2], 10)


def test_unknown_arch_lists_valid_names():
    with pytest.raises(ValueError, match="resnet1000") as err:
        build_model("resnet1000", 10)
    for name in ARCHITECTURES:
        assert name in str(err.value)


def test_pretrained_round_trip(tmp_path):
    torch.manual_seed(1)
    source = torchvision.models.resnet18(weights=None, num_classes=1000)
    with torch.no_grad():  # make buffers distinguishable from a fresh model's defaults
        source.bn1.running_mean.uniform_()
        source.layer4[1].bn2.running_var.uniform_(1, 2)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)

    torch.manual_seed(2)
    model = build_model("tv_resnet18", num_classes=7, pretrained=str(path))
    expected = source.state_dict()
    loaded = model.state_dict()
    backbone = [k for k in expected if not k.startswith("fc.")]
    assert len(backbone) == len(loaded) - 2
    for key in backbone:
        assert torch.equal(loaded[key], expected[key]), key
    assert model.fc.weight.shape == (7, 512)
    assert model.fc.bias.shape == (7,)


def test_pretrained_with_other_input_channels(tmp_path):
    source = build_model("resnet10", num_classes=1000)
    path = tmp_path / "resnet10.pth"
    torch.save(source.state_dict(), path)
    model = build_model("resnet10", num_classes=3, in_channels=1, pretrained=str(path))
    assert model.conv1.weight.shape == (64, 1, 7, 7)
    assert torch.equal(model.layer1[0].conv1.weight, source.layer1[0].conv1.weight)


def test_pretrained_missing_file(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_model("tv_resnet18", 10, pretrained=str(path))


def test_pretrained_mismatched_keys(tmp_path):
    state = torchvision.models.resnet18(weights=None).state_dict()
    del state["layer1.0.conv1.weight"]
    state["layer2.0.conv1.weight"] = torch.zeros(1, 2, 3, 3)
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        build_model("tv_resnet18", 10, pretrained=str(path))
    message = str(err.value)
    assert "missing layer1.0.conv1.weight" in message
    assert "unexpected extra.weight" in message
    assert "shape layer2.0.conv1.weight" in message


def test_pretrained_other_backbone_rejected(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="unexpected layer1.2"):
        build_model("tv_resnet18", 10, pretrained=str(path))


@pytest.mark.parametrize("arch", ["small_cnn", "resnet32"])
def test_pretrained_unsupported_arch(tmp_path, arch):
    with pytest.raises(ValueError, match=arch):
        build_model(arch, 10, pretrained=str(tmp_path / "w.pth"))


def test_small_cnn_learns_digits_quickly():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    y = torch.tensor(labels)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)

    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, in_channels=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    # One intra-op thread: the convs are tiny, and OpenMP threads spinning
    # against other busy processes slow this run down tenfold.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        for _ in range(3):
            model.train()
            order = torch.randperm(len(x_train))
            for i in range(0, len(order), 64):
                batch = order[i:i + 64]
                loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    assert accuracy >= 0.85
    assert elapsed < 10.0


def test_a_specialist_starts_from_the_joint_models_weights_and_its_classes_rows():
    from lfme.models import specialist_weights

    torch.manual_seed(0)
    joint = build_model("resnet8", 5, in_channels=3)
    expert = build_model("resnet8", 2, in_channels=3)
    weights = specialist_weights(joint.state_dict(), expert, (1, 3))
    expert.load_state_dict(weights)
    for name, value in joint.state_dict().items():
        if value.shape == expert.state_dict()[name].shape:
            assert torch.equal(expert.state_dict()[name], value), name
    # The expert's logits are the joint model's logits of classes 1 and 3, in that order.
    joint.eval(), expert.eval()
    images = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(expert(images), joint(images)[:, [1, 3]])
    with pytest.raises(ValueError, match="does not give the expert's"):
        specialist_weights(build_model("resnet20", 5).state_dict() | {"conv1.weight": torch.zeros(1)}, expert, (1, 3))
