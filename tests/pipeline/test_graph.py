"""pipeline.graph: the fingerprints of the shipped configs, pinned; and which settings enter which stage's fingerprint.

A fingerprint decides whether a finished stage is reused, so a refactor that
changes one makes every existing run directory retrain from scratch. The
values below were computed before the package was layered (issue 11) and must
not move unless a change is meant to invalidate old runs (say so in the
commit and in docs/RESULTS.md where results depend on it).

2026-12-06: the class-balanced sampler's default became the official class
cycle (`distill.class_draw: cycle`), a change meant to retrain the students:
the pinned values are those of the runs made before it, which drew classes
i.i.d., and a config asking for that draw keeps them (`pipeline.graph`
leaves a field added later out of the fingerprint at its earlier behaviour).

2026-12-07: the CIFAR-10-LT and Tiny-ImageNet-100-LT presets start their
experts from a joint model (`experts.init: joint`; 3-seed evidence in
docs/RESULTS.md), a change meant to retrain their experts and what follows;
`experts.init=scratch` gives back the earlier fingerprints (`PAPER_EXPERTS`).
"""

import pytest

from pipeline.graph import fingerprints
from rundir.config import Config, load_config

PINNED = {
    "configs/cifar10-lt.yaml": {
        "split": "7a1e85226611b54a",
        "experts": "3f4f02099cf70158",
        "cache": "ef6aa23e6b4c0345",
        "distill": "181747688a1d70c1",
        "evaluate": "b5fa6181d3e915a5",
    },
    "configs/imagenet-lt.yaml": {
        "split": "0c1c36c3544a3a52",
        "experts": "bc8e9be777d9883c",
        "cache": "aea3eb1de5f29da1",
        "distill": "1e79b36e749005e7",
        "evaluate": "212d0f8cb48af6e8",
    },
    "configs/tiny-imagenet-100-lt.yaml": {
        "split": "ce7a0a53829001bf",
        "experts": "64119e6f9eb2b310",
        "cache": "332c62b65b83257a",
        "distill": "2fcb283f4fe3ff65",
        "evaluate": "b0ab4e27cfebd558",
    },
}


IID = ["distill.class_draw=iid"]
# The students of the cycle draw (the default since 2026-12-06): distill and evaluate move, the rest stays.
CYCLE = {
    "configs/cifar10-lt.yaml": {"distill": "06656347654107d8", "evaluate": "b311b01490854351"},
    "configs/imagenet-lt.yaml": {"distill": "33a848b457a23389", "evaluate": "0fb8ec50959a04e9"},
    "configs/tiny-imagenet-100-lt.yaml": {"distill": "2d0fd868306cfc2d", "evaluate": "9907b1031d6f2f34"},
}


# The presets whose experts became joint on 2026-12-07: what they were pinned with, and their fingerprints now.
PAPER_EXPERTS = {
    "configs/cifar10-lt.yaml": ["experts.init=scratch"],
    "configs/imagenet-lt.yaml": [],
    "configs/tiny-imagenet-100-lt.yaml": ["experts.init=scratch"],
}
JOINT = {
    "configs/cifar10-lt.yaml": {
        "split": "7a1e85226611b54a",  # the split does not move
        "experts": "98c068a3b192bb43",
        "cache": "e1df87af14d2516e",
        "distill": "c8ce207c2561b0c5",
        "evaluate": "ff9aa3dc1046d4ef",
    },
    "configs/tiny-imagenet-100-lt.yaml": {
        "split": "ce7a0a53829001bf",
        "experts": "9722b0e7459cec9c",
        "cache": "50744b6d90b745fc",
        "distill": "65266c46d5649d0c",
        "evaluate": "fbc9e47d80d9af82",
    },
}


# The data roots the presets were pinned with (the root is a split setting):
# this project's data folder, given explicitly since the presets name data/.
ROOTS = {
    "configs/cifar10-lt.yaml": ["data.root=../shared/data/cifar10"],
    "configs/imagenet-lt.yaml": [],
    "configs/tiny-imagenet-100-lt.yaml": ["data.root=../shared/data/tiny-imagenet-100"],
}


@pytest.mark.parametrize("path", sorted(PINNED))
def test_preset_fingerprints_are_pinned(path):
    assert fingerprints(load_config(path, [*ROOTS[path], *PAPER_EXPERTS[path], *IID])) == PINNED[path]
    assert fingerprints(load_config(path, [*ROOTS[path], *PAPER_EXPERTS[path]])) == {**PINNED[path], **CYCLE[path]}
    assert fingerprints(load_config(path, ROOTS[path])) == JOINT.get(path, {**PINNED[path], **CYCLE[path]})


def test_the_default_configs_cycle_draw_moves_only_the_student():
    assert fingerprints(Config()) == {
        "split": "79e978f8523aa05e",
        "experts": "5b613578e92d73d9",
        "cache": "31df5e20fd752eee",
        "distill": "22636eb8a132d88c",
        "evaluate": "884c49c3d6cb8e62",
    }


def test_default_config_fingerprints_are_pinned():
    assert fingerprints(load_config(None, IID)) == {
        "split": "79e978f8523aa05e",
        "experts": "5b613578e92d73d9",
        "cache": "31df5e20fd752eee",
        "distill": "678606cc3caab6fd",
        "evaluate": "071f21b3b2ad241e",
    }


def test_fingerprints_with_the_newer_switches_are_pinned():
    config = load_config(
        "configs/cifar10-lt.yaml",
        [
            *ROOTS["configs/cifar10-lt.yaml"],
            "model.arch=resnet8",
            "experts.min_steps=600",
            "distill.spis_init=official",
            "distill.spis_horizon=half",
            "distill.spis_clip=false",
            "distill.spis_on=logits",
            "distill.teachers=live",
            "precision=bf16",
            *PAPER_EXPERTS["configs/cifar10-lt.yaml"],
            *IID,
        ],
    )
    assert fingerprints(config) == {
        "split": "7a1e85226611b54a",
        "experts": "90ec0a6fe62c4604",
        "cache": "70cdb71cf718cc4f",
        "distill": "f5a54aa97e16cec1",
        "evaluate": "75ce975c81a0b7b4",
    }


# --------------------------------------------------------------------------- what enters which stage's fingerprint


def test_top_k_enters_the_cache_fingerprint_only_when_set():
    from pipeline.graph import fingerprints
    from rundir.config import Config, load_config

    base = fingerprints(Config())
    k = fingerprints(load_config(None, ["cache.top_k=5"]))
    assert (k["split"], k["experts"]) == (base["split"], base["experts"])
    assert k["cache"] != base["cache"] and k["distill"] != base["distill"]
    assert fingerprints(load_config(None, ["cache.shard_rows=10", "cache.local_dir=/elsewhere"])) == base


def test_views_enter_the_cache_fingerprint_only_when_more_than_one_with_the_seed_that_draws_them():
    import pytest

    from pipeline.graph import fingerprints, stage_settings
    from rundir.config import Config, load_config
    from rundir.fields import ConfigError

    base = fingerprints(Config())
    assert fingerprints(load_config(None, ["cache.views=1"])) == base
    four, eight = (load_config(None, [f"cache.views={k}"]) for k in (4, 8))
    assert fingerprints(four)["experts"] == base["experts"]
    assert len({base["cache"], fingerprints(four)["cache"], fingerprints(eight)["cache"]}) == 3
    assert stage_settings(four, "cache")["views"] == 4 and stage_settings(four, "cache")["seed"] == 0
    assert "views" not in stage_settings(Config(), "cache")
    with pytest.raises(ConfigError, match="cache.views: must be a positive integer, got 0"):
        load_config(None, ["cache.views=0"])


def test_allot_draws_enters_the_cache_fingerprint_only_when_asked_for_with_the_sampling_it_allots_by():
    from pipeline.graph import fingerprints, stage_settings
    from rundir.config import load_config

    four = fingerprints(load_config(None, ["cache.views=4"]))
    assert fingerprints(load_config(None, ["cache.views=4", "cache.allot=uniform"])) == four
    # distill.sampling decides the student's draws: it moves a uniform cache's fingerprint only downstream.
    instance = fingerprints(load_config(None, ["cache.views=4", "distill.sampling=instance"]))
    assert instance["cache"] == four["cache"] and instance["distill"] != four["distill"]
    drawn = load_config(None, ["cache.views=4", "cache.allot=draws"])
    assert stage_settings(drawn, "cache") == {"precision": "fp32", "views": 4, "seed": 0, "allot": "draws", "sampling": "class"}
    by_instance = fingerprints(load_config(None, ["cache.views=4", "cache.allot=draws", "distill.sampling=instance"]))
    assert len({four["cache"], fingerprints(drawn)["cache"], by_instance["cache"]}) == 3
    assert fingerprints(drawn)["experts"] == four["experts"]


def test_joint_experts_enter_the_experts_fingerprint_only_when_asked_for():
    from pipeline.graph import fingerprints
    from rundir.config import Config, load_config

    base = fingerprints(Config())
    assert fingerprints(load_config(None, ["experts.init=scratch"])) == base
    joint = fingerprints(load_config(None, ["experts.init=joint"]))
    assert joint["split"] == base["split"] and all(joint[s] != base[s] for s in ("experts", "cache", "distill", "evaluate"))
