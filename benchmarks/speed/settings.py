"""The benchmark's fixed settings: the preset and its overrides, the goals, and the thresholds the report applies.

Plain values, importable without torch or Ray (`render` needs only these).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.scales import CPU_SCALE

# The repository: the presets, the data beside it, and (h)'s git worktrees.
REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "configs" / "cifar10-lt.yaml"
DATA = REPO.parent / "shared" / "data" / "cifar10"
# The paper's experts (the preset's are joint since 2026-12-07): a joint model would add one more model's
# training to every run the benchmark times, and the figures stay comparable with the earlier ones.
SCALE = CPU_SCALE + ["experts.epochs=1", "split.method=balanced", "split.num_subsets=3", "experts.init=scratch"]
GOALS = {"cache_ratio": 2.0, "ray_overhead": 0.05, "bf16_speedup": 2.0, "loader_share": 0.10, "default_run_s": 60.0}
# What (a) runs in: the presets' precision.
PRESET_PRECISION = "bf16"
# (f): the CPU scale's student and the preset's.
PRECISION_ARCHS = ("resnet8", "resnet32")
# (g): the loader's share of a student step before batched augmentation (issue 9: 72 of 331 ms).
LOADER_SHARE_BEFORE = 72 / 331
# (h): the default run, and its test top-1 before this work.
DEFAULT_CONFIG = "ray_config.yaml"
DEFAULT_RUN_TOP1 = 0.942
# Repeats further apart than this (max/min) are flagged as noisy (cache_speed's threshold too).
NOISY_SPREAD = 1.15
# Where the student trains: the driver in local mode, the Ray Train worker otherwise (names of `processes.ProcessCPU`).
TRAINING_PROCESSES = ("driver", "ray::RayTrainWorker")
