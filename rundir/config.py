"""The run configuration: plain data, validated when loaded.

A config is a YAML file whose keys mirror the dataclasses below. Loading walks
the YAML against the dataclass fields, so an unknown key, a value of the wrong
type or a value out of range fails at once with one line naming the key
(`ConfigError: distill.temperature: expected a number, got 'hot'`), long before
a Ray worker would have tripped over it.

The sections are `rundir.sections`; the walk from YAML to dataclasses and its
errors, `rundir.fields`; here, the root `Config`, loading with `--set`
overrides, and writing back.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import yaml

from lfme import storage
from lfme.choices import PrecisionName
from rundir.fields import ConfigError, build
from rundir.sections import (
    CacheConfig,
    DataConfig,
    DistillConfig,
    EvaluateConfig,
    ExpertsConfig,
    ModelConfig,
    RayConfig,
    SplitConfig,
    TuneConfig,
)


@dataclass
class Config:
    seed: int = 0
    # Arithmetic of every stage that runs a model (experts, cache, distill,
    # evaluate, tune): fp32; bf16 autocast (CPUs with AVX512-BF16 or AMX, and
    # CUDA); fp16 autocast with loss scaling (CUDA only). Where the hardware
    # cannot, the stage says so in one line and runs fp32 (lfme.precision).
    precision: PrecisionName = "fp32"
    run_dir: str = "runs/default"
    ray: RayConfig = field(default_factory=RayConfig)
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    experts: ExpertsConfig = field(default_factory=ExpertsConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`distill.temperature=4` -> (['distill', 'temperature'], 4); values are YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. distill.epochs=5")
    return key.strip().split("."), yaml.safe_load(raw)


def set_value(data: dict, keys: list[str], value: Any, where: str) -> None:
    """Set `data[keys[0]]...[keys[-1]] = value` in place, making missing sections; `where` names the setting in errors."""
    node = data
    for key in keys[:-1]:
        if node.get(key) is None:  # a missing section, or an empty one (`ray:` alone)
            node[key] = {}
        node = node[key]
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: '{key}' is not a section")
    node[keys[-1]] = value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """A copy of `data` with each `--set key=value` applied in order (values parsed as YAML)."""
    data = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        set_value(data, keys, value, f"--set {text!r}")
    return data


def config_from_dict(data: dict, overrides: Sequence[str] = ()) -> Config:
    config = build(Config, apply_overrides(data, list(overrides)), "")
    _check_cross_section(config)
    return config


def with_values(config: Config, values: dict[str, Any]) -> Config:
    """A copy of `config` with dotted keys set (`{"distill.temperature": 4}`), validated again.

    The same path as `--set`, except that the values come from Python (a Tune
    trial's config), not YAML text; numpy scalars become Python ones first.
    """
    data = config.to_dict()
    for key, value in values.items():
        set_value(data, key.split("."), value.item() if hasattr(value, "item") else value, key)
    return config_from_dict(data)


def _check_run_dir(run_dir: str) -> None:
    """A URL run directory needs a filesystem fsspec knows and whose package is installed."""
    if not storage.is_url(run_dir):
        return
    import fsspec

    scheme = run_dir.split("://", 1)[0]
    try:
        fsspec.get_filesystem_class(scheme)
    except ValueError:
        raise ConfigError(f"run_dir: unknown storage scheme '{scheme}://' in {run_dir!r}") from None
    except ImportError as err:
        raise ConfigError(f"run_dir: {run_dir!r} needs a package that is not installed: {err}") from None


def _check_cross_section(config: Config) -> None:
    _check_run_dir(config.run_dir)
    if config.distill.spes and config.data.val_per_class == 0 and not config.data.val:
        raise ConfigError(
            "distill.spes: SpES needs a validation set; set data.val_per_class > 0 or data.val"
        )
    if config.cache.allot == "draws" and "distill.sampling" in config.tune.search_space:
        # Every trial reads the one cache, whose views follow the base config's sampling.
        raise ConfigError(
            f"tune.search_space: distill.sampling cannot be swept over a cache.allot: draws cache (its views are "
            f"allotted for distill.sampling: {config.distill.sampling}); sweep it over cache.allot: uniform"
        )


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """Load and validate a YAML config; `None` gives the built-in defaults."""
    data: Any = {}
    if path is not None:
        path = str(path)
        if not storage.is_file(path):
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(storage.read_text(path)) or {}
        except yaml.YAMLError as err:
            # One line (the CLI prints one): file:line:column and the problem,
            # not PyYAML's multi-line report about "<unicode string>".
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
            problem = " ".join(str(getattr(err, "problem", None) or err).split())
            raise ConfigError(f"{where}: not valid YAML: {problem}") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return config_from_dict(data, overrides)


def with_absolute_paths(config: Config, base: Path | None = None) -> Config:
    """A copy whose local paths are absolute: Ray workers do not share the driver's working directory."""
    base = Path(base or Path.cwd())
    config = copy.deepcopy(config)

    def absolute(path: str) -> str:
        if "://" in path or Path(path).is_absolute():
            return path
        return str((base / path).resolve())

    if config.data.root is not None:
        config.data.root = absolute(config.data.root)
    if config.model.pretrained is not None:
        config.model.pretrained = absolute(config.model.pretrained)
    config.run_dir = absolute(config.run_dir)
    return config


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
