"""`lfme export RUN_DIR OUT_DIR [--format safetensors|torchscript|onnx]`: the student in a standard format.

Each export writes the model file and, beside it, `model_card.json` and
`README.md`: the architecture, the classes, the preprocessing, the precision
it trained in, the run's fingerprints, its test accuracy overall and per
group, and the LFME settings it was distilled with. Each format loads without
this project:

- `torchscript` (`student.torchscript.pt`): `torch.jit.load`, traced on the
  evaluation input size;
- `onnx` (`student.onnx`, opset 17, dynamic batch): onnxruntime or any ONNX runtime;
- `safetensors` (`student.safetensors`): the state dict, for the
  torchvision-layout students (`resnet10`, `tv_resnet*`) loadable into
  torchvision's `ResNet` (the card says how); other architectures are this
  project's own (`lfme.models.build_model`).

`onnx` and `safetensors` need the `export` extra (`pip install 'lfme-ray[export]'`).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import warnings
from typing import Any

import torch

from lfme import storage
from lfme.choices import TORCHVISION_RESNETS
from pipeline.manifest import library_versions
from pipeline.student import TrainedStudent

FORMATS = {"torchscript": "student.torchscript.pt", "onnx": "student.onnx", "safetensors": "student.safetensors"}
EXTRA_PACKAGES = {"onnx": ("onnx",), "safetensors": ("safetensors",)}
ONNX_OPSET = 17
TORCHVISION_LAYOUT = {"resnet10": "ResNet(BasicBlock, [1, 1, 1, 1])", **{f"tv_{n}": n for n in TORCHVISION_RESNETS}}


class ExportError(ValueError):
    """The format cannot be written: a package is missing, or the architecture has no such form."""


def example_input(student: TrainedStudent) -> torch.Tensor:
    return torch.zeros(1, student.channels, student.image_size, student.image_size)


def export(student: TrainedStudent, out_dir: str, fmt: str) -> dict[str, str]:
    """Write the student in `fmt` and its model card into `out_dir`; returns {file name: location}."""
    if fmt not in FORMATS:
        raise ExportError(f"--format: one of {', '.join(FORMATS)}, got {fmt!r}")
    missing = [p for p in EXTRA_PACKAGES.get(fmt, ()) if importlib.util.find_spec(p) is None]
    if missing:
        raise ExportError(f"--format {fmt} needs {', '.join(missing)}: pip install 'lfme-ray[export]'")
    model = student.model.float().eval().cpu()
    target = storage.join(out_dir, FORMATS[fmt])
    with storage.atomic_file(target) as f:
        if fmt == "torchscript":
            with warnings.catch_warnings():  # torch calls TorchScript deprecated; it is the format asked for
                warnings.simplefilter("ignore", FutureWarning)
                torch.jit.save(torch.jit.trace(model, example_input(student)), f)
        elif fmt == "onnx":
            f.write(_onnx_bytes(model, example_input(student)))
        else:
            from safetensors.torch import save

            f.write(save({k: v.contiguous() for k, v in model.state_dict().items()}))
    card = model_card(student, fmt, storage.file_sha256(target))
    storage.write_json_atomic(storage.join(out_dir, "model_card.json"), card)
    storage.write_text_atomic(storage.join(out_dir, "README.md"), card_readme(card))
    return {name: storage.join(out_dir, name) for name in (FORMATS[fmt], "model_card.json", "README.md")}


def _onnx_bytes(model: torch.nn.Module, example: torch.Tensor) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.onnx.export(
        model,
        (example,),
        # torch annotates a path, but its TorchScript exporter (dynamo=False) takes a file object too.
        buffer,  # type: ignore[arg-type]
        input_names=["images"], output_names=["logits"], opset_version=ONNX_OPSET,
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
    )
    return buffer.getvalue()


def model_card(student: TrainedStudent, fmt: str, sha256: str) -> dict[str, Any]:
    """What a user of the exported file needs to know, as data."""
    distill = student.config.to_dict()["distill"] if student.config is not None else {}
    accuracy = None
    if student.accuracy is not None:
        shots = student.accuracy["shots"]["inclusive"]
        accuracy = {"overall": student.accuracy["overall"], "many": shots["many"], "medium": shots["medium"], "few": shots["few"],
                    "shot_rule": shots["rule"], "test_images": student.accuracy["num_samples"]}
    return {
        "format": fmt,
        "file": FORMATS[fmt],
        "sha256": sha256,
        "architecture": student.arch,
        "torchvision_equivalent": TORCHVISION_LAYOUT.get(student.arch),
        "num_classes": len(student.class_names),
        "class_names": student.class_names,
        "input": {
            "channels": student.channels,
            "size": [student.image_size, student.image_size],
            "layout": "NCHW float32",
            "transform_family": student.transform,
            "mean": list(student.mean),
            "std": list(student.std),
            "steps": preprocessing_steps(student),
        },
        "output": "logits (N, num_classes); softmax for probabilities",
        "trained_precision": student.precision,
        "test_accuracy": accuracy,
        "lfme": {key: distill.get(key) for key in ("sampling", "kd", "temperature", "spes", "alpha", "spis", "schedule", "epochs")},
        "run_dir": student.run_dir,
        "fingerprints": student.fingerprints,
        "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "versions": library_versions(),
    }


def preprocessing_steps(student: TrainedStudent) -> list[str]:
    """The evaluation transform in words (lfme.data.transforms), for users without the project."""
    size = student.image_size
    mode = "grayscale (L)" if student.channels == 1 else "RGB"
    resize = {
        "digits": [],
        "cifar": [f"resize to {size}x{size}"],
        "imagenet": [f"resize the short side to {int(size * 256 / 224)}", f"center crop {size}x{size}"],
    }[student.transform]
    return [f"convert to {mode}", *resize, "scale to [0, 1]", f"normalise with mean {list(student.mean)} and std {list(student.std)}"]


LOADERS = {
    "torchscript": "model = torch.jit.load('student.torchscript.pt').eval()\nlogits = model(images)",
    "onnx": "import onnxruntime\nsession = onnxruntime.InferenceSession('student.onnx')\nlogits = session.run(['logits'], {'images': images.numpy()})[0]",
    "safetensors": "from safetensors.torch import load_file\nmodel.load_state_dict(load_file('student.safetensors'))  # model: see the architecture above",
}


def card_readme(card: dict[str, Any]) -> str:
    accuracy = card["test_accuracy"]
    lines = [
        f"# LFME student ({card['architecture']}, {card['num_classes']} classes)",
        "",
        f"File: `{card['file']}` ({card['format']}, SHA-256 `{card['sha256']}`), trained in {card['trained_precision']}.",
        "",
        "## Input",
        f"{card['input']['channels']} x {card['input']['size'][0]} x {card['input']['size'][1]} float32 images, NCHW, prepared as:",
        *[f"1. {step}" for step in card["input"]["steps"]],
        "",
        "## Load",
        "```python",
        LOADERS[card["format"]],
        "```",
    ]
    if card["format"] == "safetensors":
        equivalent = card["torchvision_equivalent"]
        lines += [
            "",
            f"Architecture: torchvision's `{equivalent}`" + (" (torchvision.models.resnet)" if equivalent and "ResNet(" in equivalent else "")
            + f" with `num_classes={card['num_classes']}`"
            + (f" and `conv1 = Conv2d({card['input']['channels']}, 64, 7, 2, 3, bias=False)`" if card["input"]["channels"] != 3 else "")
            if equivalent else f"Architecture: `{card['architecture']}` of lfme-ray (`lfme.models.build_model`); no torchvision equivalent.",
        ]
    lines += ["", "## Classes", ", ".join(f"{i}: {name}" for i, name in enumerate(card["class_names"]))]
    if accuracy is not None:
        lines += [
            "", "## Test accuracy of the run",
            f"top-1 {100 * accuracy['overall']:.1f}% on {accuracy['test_images']} images; "
            + ", ".join(f"{g} {100 * accuracy[g]:.1f}%" for g in ("many", "medium", "few") if accuracy[g] is not None)
            + f" ({accuracy['shot_rule']})",
        ]
    lines += ["", "## Distillation", json.dumps(card["lfme"]), "", "Run fingerprints: " + json.dumps(card["fingerprints"]), ""]
    return "\n".join(lines)
