"""pipeline.export without a finished run: a student exported as safetensors loads into torchvision's ResNet.

`fresh_logits` runs a script in a new interpreter that imports nothing of this
project (the integration tests of the other formats use it too).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from pipeline.student import TrainedStudent


def fresh_logits(script: str, directory: Path, inputs: np.ndarray) -> np.ndarray:
    """Run `script` (it reads `x`, sets `out`) in a new interpreter in `directory`, with nothing of this project importable."""
    np.save(directory / "x.npy", inputs)
    code = "import numpy as np\nx = np.load('x.npy')\n" + script + "\nnp.save('out.npy', out)\n"
    done = subprocess.run([sys.executable, "-I", "-c", code], cwd=directory, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return np.load(directory / "out.npy")


def test_safetensors_load_into_torchvisions_resnet(tmp_path):
    from lfme.models import build_model
    from pipeline.export import export

    torch.manual_seed(0)
    model = build_model("resnet10", 7).eval()
    student = TrainedStudent(model, "resnet10", [f"c{i}" for i in range(7)], 3, "imagenet", 32, (0.5,) * 3, (0.25,) * 3, "fp32", None, "run")
    export(student, str(tmp_path), "safetensors")
    card = json.loads((tmp_path / "model_card.json").read_text())
    assert card["torchvision_equivalent"] == "ResNet(BasicBlock, [1, 1, 1, 1])"
    assert "ResNet(BasicBlock, [1, 1, 1, 1])" in (tmp_path / "README.md").read_text()
    inputs = torch.randn(4, 3, 32, 32)
    script = (
        "import torch\nfrom safetensors.torch import load_file\nfrom torchvision.models.resnet import ResNet, BasicBlock\n"
        "model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=7).eval()\nmodel.load_state_dict(load_file('student.safetensors'))\n"
        "out = model(torch.from_numpy(x)).detach().numpy()"
    )
    got = fresh_logits(script, tmp_path, inputs.numpy())
    assert np.abs(got - student.logits(inputs).numpy()).max() < 1e-4
