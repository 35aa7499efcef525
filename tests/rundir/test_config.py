"""The config schema: presets load, and every mistake a user can make fails at
load time with one line naming the dotted key (no Ray, no data needed)."""


import pytest
import yaml

from rundir.config import Config, config_from_dict, load_config
from rundir.fields import ConfigError
from tests.pipeline_helpers import REPO

ROOT = REPO
PRESETS = sorted((ROOT / "configs").glob("*.yaml"))


def _base() -> dict:
    """The default run's YAML as a mapping: a valid starting point to break."""
    return yaml.safe_load((ROOT / "ray_config.yaml").read_text())


def _error(data: dict, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, list(overrides))
    message = str(info.value)
    assert "\n" not in message, f"a config error must be one line, got {message!r}"
    return message


# --------------------------------------------------------------------------- presets


def test_the_expected_presets_exist():
    names = {p.name for p in PRESETS}
    assert {
        "cifar10-lt.yaml",
        "cifar100-lt.yaml",
        "tiny-imagenet-100-lt.yaml",
        "imagenet-lt.yaml",
        "places-lt.yaml",
        "inat2018.yaml",
    } <= names


@pytest.mark.parametrize("path", [ROOT / "ray_config.yaml", *PRESETS], ids=lambda p: p.name)
def test_preset_loads(path):
    config = load_config(path)
    assert isinstance(config, Config)
    # Nothing is left at the built-in default by accident: each file names its source.
    raw = yaml.safe_load(path.read_text())
    assert config.data.source == raw["data"]["source"]
    assert config.model.arch == raw["model"]["arch"]


def test_presets_carry_the_documented_recipes():
    # bf16 where it was measured at least as accurate as fp32 (docs/RESULTS.md, Precision); fp32 elsewhere.
    assert load_config(ROOT / "configs/cifar10-lt.yaml").precision == "bf16"
    assert load_config(ROOT / "ray_config.yaml").precision == "fp32"

    tiny = load_config(ROOT / "configs/tiny-imagenet-100-lt.yaml")
    assert (tiny.data.source, tiny.data.image_size, tiny.data.imbalance_factor) == ("parquet", 64, 100)
    assert (tiny.data.train, tiny.data.test, tiny.data.classes_file) == ("train.parquet", "val.parquet", "classes.txt")
    assert tiny.distill.epochs == 200 and tiny.split.method == "thresholds"

    c100 = load_config(ROOT / "configs/cifar100-lt.yaml")
    assert c100.data.source == "cifar100" and c100.data.download is True
    assert c100.split.thresholds == [20.0, 100.0] and c100.split.convention == "inclusive"
    assert c100.distill.milestones == [160, 180] and c100.experts.milestones == [160, 180]

    for name in ("imagenet-lt.yaml", "places-lt.yaml"):
        cfg = load_config(ROOT / "configs" / name)
        assert cfg.data.source == "oltr" and cfg.data.imbalance_factor is None
        d = cfg.distill
        assert (d.epochs, d.batch_size, d.lr, d.momentum, d.weight_decay) == (90, 256, 0.1, 0.9, 5e-4)
        assert (d.lr_schedule, d.milestones, d.temperature, d.alpha) == ("step", [40, 80], 2.0, 0.6)
        assert d.resources.gpus_per_worker == 1 and cfg.data.loader_workers == 8

    imagenet = load_config(ROOT / "configs/imagenet-lt.yaml")
    assert imagenet.model.arch == "resnet10"
    e = imagenet.experts
    assert (e.epochs, e.lr_schedule, e.batch_size) == (120, "cosine", 128)

    places = load_config(ROOT / "configs/places-lt.yaml")
    assert places.model.arch == "tv_resnet152" and places.model.pretrained

    inat = load_config(ROOT / "configs/inat2018.yaml")
    assert (inat.data.source, inat.data.transform, inat.data.imbalance_factor) == ("inat", "imagenet", None)
    assert (inat.data.train, inat.data.test, inat.data.val, inat.data.val_per_class) == ("train2018.json", "val2018.json", None, 1)
    assert inat.model.arch == "tv_resnet50" and inat.model.pretrained is None
    assert inat.split.thresholds == [20.0, 100.0] and inat.split.convention == "inclusive"
    for t in (inat.experts, inat.distill):  # RIDE / SADE's iNat 2018 ResNet-50 recipe
        assert (t.epochs, t.batch_size, t.lr, t.weight_decay, t.lr_schedule, t.milestones) == (100, 512, 0.2, 2e-4, "step", [60, 80])
        assert t.resources.gpus_per_worker == 1
    assert inat.evaluate.resources.gpus_per_worker == 1


# --------------------------------------------------------------------------- unknown keys


def test_unknown_top_level_key():
    data = _base()
    data["sed"] = 1
    message = _error(data)
    assert "'sed'" in message and "unknown key" in message


def test_unknown_nested_key_names_the_dotted_path():
    data = _base()
    data["distill"]["tempreature"] = 4
    message = _error(data)
    assert message == "unknown key 'distill.tempreature' (did you mean 'distill.temperature'?)"


def test_an_unknown_key_like_no_valid_one_lists_the_valid_keys():
    data = _base()
    data["evaluate"]["zzz"] = 1
    message = _error(data)
    assert message == "unknown key 'evaluate.zzz' (valid keys of evaluate: shot_thresholds, batch_size, resources)"


def test_unknown_key_two_levels_down():
    data = _base()
    data["experts"]["resources"]["gpus"] = 1
    assert "experts.resources.gpus" in _error(data)


def test_unknown_section():
    assert "'trainer'" in _error({"trainer": {"epochs": 3}})


# --------------------------------------------------------------------------- types


@pytest.mark.parametrize(
    "section, key, value, words",
    [
        ("distill", "temperature", "hot", ["distill.temperature", "'hot'", "number"]),  # string for a float
        ("distill", "epochs", 2.5, ["distill.epochs", "2.5", "integer"]),  # float for an int
        ("experts", "batch_size", True, ["experts.batch_size", "True", "integer"]),  # bool for an int
        ("distill", "kd", "yes please", ["distill.kd", "'yes please'", "true or false"]),
        ("split", "thresholds", 20, ["split.thresholds", "20", "list"]),  # list expected
        ("distill", "milestones", "40,80", ["distill.milestones", "'40,80'", "list"]),
        ("data", "root", 5, ["data.root", "5", "string"]),
    ],
)
def test_wrong_type_names_key_and_value(section, key, value, words):
    data = _base()
    data[section][key] = value
    message = _error(data)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_wrong_type_inside_a_list_names_the_element():
    data = _base()
    data["evaluate"]["shot_thresholds"] = [20, "many"]
    message = _error(data)
    assert "evaluate.shot_thresholds[1]" in message and "'many'" in message


def test_wrong_type_in_nested_resources():
    data = _base()
    data["distill"]["resources"]["num_workers"] = "2"
    message = _error(data)
    assert "distill.resources.num_workers" in message and "'2'" in message


def test_section_that_is_not_a_mapping():
    data = _base()
    data["distill"] = 5
    assert "distill" in _error(data) and "mapping" in _error(data)


def test_int_is_accepted_for_a_float_and_converted():
    data = _base()
    data["distill"]["temperature"] = 3
    config = config_from_dict(data)
    assert config.distill.temperature == 3.0 and isinstance(config.distill.temperature, float)


def test_empty_section_means_defaults():
    data = _base()
    data["ray"] = None  # `ray:` with every key commented out
    assert config_from_dict(data).ray.address is None


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    "section, key, value, field",
    [
        ("experts", "epochs", -5, "experts.epochs"),
        ("distill", "epochs", 0, "distill.epochs"),
        ("distill", "alpha", 1.5, "distill.alpha"),
        ("distill", "temperature", 0, "distill.temperature"),
        ("distill", "lr", -0.1, "distill.lr"),
        ("data", "imbalance_factor", 0.5, "data.imbalance_factor"),
        ("data", "val_per_class", -1, "data.val_per_class"),
        ("data", "source", "mnist", "data.source"),
        ("distill", "lr_schedule", "exponential", "distill.lr_schedule"),
    ],
)
def test_bad_value_names_the_field(section, key, value, field):
    data = _base()
    data[section][key] = value
    message = _error(data)
    assert field in message and str(value) in message


def test_unknown_data_source_lists_the_valid_ones():
    data = _base()
    data["data"]["source"] = "mnist"
    message = _error(data)
    for source in ("digits", "imagefolder", "oltr", "parquet", "inat", "cifar10", "cifar100"):
        assert source in message


def test_unknown_arch_lists_valid_names():
    data = _base()
    data["model"]["arch"] = "resnet1000"
    message = _error(data)
    assert "model.arch" in message and "'resnet1000'" in message
    for arch in ("small_cnn", "resnet32", "resnet10", "tv_resnet152"):
        assert arch in message


def test_step_schedule_needs_milestones():
    data = _base()
    data["experts"]["lr_schedule"] = "step"
    data["experts"].pop("milestones", None)
    assert "experts.milestones" in _error(data)
    data["experts"]["milestones"] = [5, 10]
    assert config_from_dict(data).experts.milestones == [5, 10]


def test_spes_needs_kd():
    data = _base()
    data["distill"]["kd"] = False
    message = _error(data)
    assert "distill.spes" in message and "distill.kd" in message
    data["distill"]["spes"] = False
    assert config_from_dict(data).distill.kd is False  # without SpES, no KD is allowed


def test_spes_needs_a_validation_set():
    data = _base()
    data["data"]["val_per_class"] = 0
    message = _error(data)
    assert "distill.spes" in message and "val_per_class" in message
    # a source's own validation list is enough
    data["data"]["val"] = "val.txt"
    assert config_from_dict(data).data.val == "val.txt"


def test_a_sweep_of_the_sampling_is_refused_over_views_allotted_for_one_sampling():
    data = _base()
    data["cache"] = {"views": 4, "allot": "draws"}
    data["tune"] = {"search_space": {"distill.sampling": {"choice": ["class", "instance"]}}}
    message = _error(data)
    assert message.startswith("tune.search_space: distill.sampling") and "distill.sampling: class" in message
    data["cache"]["allot"] = "uniform"  # K views each whatever the sampling: the sweep is fine
    assert config_from_dict(data).tune.search_space == {"distill.sampling": {"choice": ["class", "instance"]}}
    data["cache"]["allot"], data["tune"]["search_space"] = "draws", {"distill.temperature": {"choice": [2, 4]}}
    assert config_from_dict(data).cache.allot == "draws"  # other distill keys sweep over it


def test_oltr_needs_a_root():
    data = _base()
    data["data"].update(source="oltr", train="a.txt", test="b.txt")
    assert "data.root" in _error(data)


def test_batch_smaller_than_workers():
    data = _base()
    data["distill"]["batch_size"] = 1
    assert "distill.batch_size" in _error(data)


# --------------------------------------------------------------------------- --set overrides


def test_override_changes_the_value_and_leaves_the_input_alone():
    data = _base()
    config = config_from_dict(data, ["distill.temperature=4"])
    assert config.distill.temperature == 4.0
    assert data["distill"]["temperature"] == 2.0
    assert config_from_dict(data).distill.temperature == 2.0


def test_override_values_are_yaml():
    config = config_from_dict(
        _base(),
        [
            "distill.kd=false",
            "distill.spes=false",
            "split.thresholds=[10, 50]",
            "split.method=thresholds",
            "data.imbalance_factor=null",
            "experts.epochs=3",
            "run_dir=runs/other",
            "ray.address=auto",
        ],
    )
    assert config.distill.kd is False and config.distill.spes is False
    assert config.split.thresholds == [10.0, 50.0] and config.split.method == "thresholds"
    assert config.data.imbalance_factor is None
    assert config.experts.epochs == 3 and isinstance(config.experts.epochs, int)
    assert config.run_dir == "runs/other" and config.ray.address == "auto"


def test_later_override_wins():
    config = config_from_dict(_base(), ["distill.epochs=3", "distill.epochs=7"])
    assert config.distill.epochs == 7


def test_override_creates_a_missing_section():
    data = _base()
    del data["evaluate"]
    assert config_from_dict(data, ["evaluate.batch_size=32"]).evaluate.batch_size == 32


def test_override_into_an_empty_section():
    data = _base()
    data["ray"] = None  # `ray:` with every key commented out
    assert config_from_dict(data, ["ray.num_cpus=2"]).ray.num_cpus == 2


def test_override_of_unknown_key_fails_like_the_file():
    message = _error(_base(), ["distill.tempreature=4"])
    assert "distill.tempreature" in message and "unknown key" in message


@pytest.mark.parametrize("value", [-4, 0])
def test_a_batch_size_below_one_is_not_a_positive_integer(value):
    for section in ("experts", "distill"):
        message = _error(_base(), [f"{section}.batch_size={value}"])
        assert message == f"{section}.batch_size: must be a positive integer, got {value}"


def test_override_of_wrong_type():
    message = _error(_base(), ["distill.epochs=many"])
    assert "distill.epochs" in message and "'many'" in message


def test_override_without_equals_sign():
    assert "distill.epochs" in _error(_base(), ["distill.epochs"])


def test_override_through_a_scalar():
    assert "seed" in _error(_base(), ["seed.value=1"])


# --------------------------------------------------------------------------- files


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(missing)


def test_invalid_yaml_names_the_file_and_line(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("distill:\n  epochs: [1\nseed: 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    message = str(info.value)
    assert str(bad) in message and "YAML" in message
    assert "\n" not in message


def test_top_level_must_be_a_mapping(tmp_path):
    bad = tmp_path / "list.yaml"
    bad.write_text("- seed: 0\n")
    with pytest.raises(ConfigError, match="list.yaml"):
        load_config(bad)


def test_load_config_applies_overrides(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text((ROOT / "ray_config.yaml").read_text())
    assert load_config(good, ["seed=7"]).seed == 7


def test_empty_file_gives_defaults(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    assert load_config(empty) == Config()


# ------------------------------------------------- run_dir URLs, cross-section rules (the CLI: tests/integration/test_cli_config_errors.py)


def test_run_dir_url_with_an_unknown_scheme_is_refused_at_load():
    with pytest.raises(ConfigError, match=r"run_dir: unknown storage scheme 'nosuchfs://'"):
        config_from_dict({"run_dir": "nosuchfs://bucket/run"})


def test_run_dir_urls_fsspec_knows_are_accepted():
    assert config_from_dict({"run_dir": "s3://bucket/run"}).run_dir == "s3://bucket/run"
    assert config_from_dict({"run_dir": "file:///tmp/run"}).run_dir == "file:///tmp/run"


def test_live_teachers_need_kd():
    with pytest.raises(ConfigError, match=r"distill.teachers: live teachers .* distill.kd: true"):
        config_from_dict({"distill": {"teachers": "live", "kd": False, "spes": False}})


def test_decode_once_is_only_for_transforms_with_a_fixed_size_and_changes_the_training_stages():
    from pipeline.graph import fingerprints

    data = _base()
    data["data"].update(transform="imagenet", decode_once=True)
    message = _error(data)
    assert "data.decode_once" in message and "'imagenet'" in message
    plain = fingerprints(config_from_dict(_base()))
    kept = config_from_dict(_base(), ["data.decode_once=true"])
    # Batched augmentation draws other crops: the experts and everything downstream change, the split does not.
    assert kept.data.decode_once
    changed = fingerprints(kept)
    assert changed["split"] == plain["split"]
    assert all(changed[s] != plain[s] for s in ("experts", "cache", "distill", "evaluate"))


def test_official_spis_switches_are_validated_and_change_only_the_student():
    from pipeline.graph import fingerprints

    assert "distill.spis_on" in _error(_base(), ["distill.spis_on=gradients"])
    assert "distill.spis_horizon" in _error(_base(), ["distill.spis_horizon=quarter"])
    plain = fingerprints(config_from_dict(_base()))
    for switch in ("distill.spis_on=logits", "distill.spis_horizon=half", "distill.spis_clip=false"):
        changed = fingerprints(config_from_dict(_base(), [switch]))
        assert changed["cache"] == plain["cache"] and changed["distill"] != plain["distill"], switch


def test_experts_min_steps_is_checked_and_retrains_the_experts():
    from pipeline.graph import fingerprints

    assert "experts.min_steps" in _error(_base(), ["experts.min_steps=-1"])
    plain = fingerprints(config_from_dict(_base()))
    budget = fingerprints(config_from_dict(_base(), ["experts.min_steps=200"]))
    assert budget["split"] == plain["split"] and budget["experts"] != plain["experts"]


def test_precision_is_validated_and_in_every_fingerprint_of_a_stage_that_runs_a_model():
    from pipeline.graph import fingerprints

    assert config_from_dict(_base()).precision == "fp32"
    message = _error({**_base(), "precision": "bf8"})
    assert "precision" in message and "bf8" in message and "bf16" in message
    plain = fingerprints(config_from_dict(_base()))
    for value in ("bf16", "fp16"):
        changed = fingerprints(config_from_dict(_base(), [f"precision={value}"]))
        assert changed["split"] == plain["split"]
        assert all(changed[s] != plain[s] for s in ("experts", "cache", "distill", "evaluate"))
    # The cache's own settings hold the precision (not only its upstream experts): inference in bf16 gives other logits.
    from pipeline.graph import stage_settings

    assert stage_settings(config_from_dict(_base(), ["precision=bf16"]), "cache") == {"precision": "bf16"}
