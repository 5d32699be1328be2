"""Run config: YAML + flags, and errors that name the field, the expectation and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from iqaflow.config.run import DEFAULT_MODELS, build_config, load_config
from iqaflow.errors import ConfigError


def test_defaults_and_override_precedence(tmp_path: Path) -> None:
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("source: /data\nshard_size: 500\nworkers: 3\nmodels: [sharpness]\n")
    cfg = load_config(cfg_file, {"workers": 5, "out": None})
    assert cfg.source == "/data" and cfg.shard_size == 500 and cfg.workers == 5
    assert cfg.models == ["sharpness"]
    assert build_config({"source": "x"}).models == DEFAULT_MODELS


def test_unknown_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("source: /data\nshard_sise: 10\n")
    with pytest.raises(ConfigError) as exc:
        load_config(cfg_file, {})
    msg = str(exc.value)
    assert "shard_sise" in msg and "did you mean 'shard_size'" in msg and "run.yaml" in msg


def test_bad_value_names_field_expected_got_and_fix() -> None:
    with pytest.raises(ConfigError) as exc:
        build_config({"source": "x", "shard_size": 0})
    msg = str(exc.value)
    assert "'shard_size'" in msg and "greater than or equal to 1" in msg and "got 0" in msg and "Fix:" in msg


def test_unknown_scorer_suggests_close_names() -> None:
    with pytest.raises(ConfigError) as exc:
        build_config({"source": "x", "models": ["sharpnes"]})
    assert "did you mean 'sharpness'" in str(exc.value).lower()


def test_bad_device_and_address() -> None:
    with pytest.raises(ConfigError, match="device"):
        build_config({"source": "x", "device": "tpu"})
    with pytest.raises(ConfigError, match="dask_address"):
        build_config({"source": "x", "dask_address": "localhost:8786"})


def test_missing_source_and_non_mapping_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'source' is required"):
        build_config({})
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(bad, {})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml", {})


def test_fingerprint_changes_with_models_only() -> None:
    a = build_config({"source": "x", "models": ["sharpness"], "workers": 1})
    b = build_config({"source": "x", "models": ["sharpness"], "workers": 4})
    c = build_config({"source": "x", "models": ["noise"]})
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_every_config_loader_reports_problems_the_same_way(tmp_path: Path) -> None:
    """Run, training and default-model configs share iqaflow.config.load: file, field, expectation, fix."""
    from iqaflow.config.default_nr import load_recipe
    from iqaflow.config.default_nr_classic import load_recipe as load_classic_recipe
    from iqaflow.config.train import load_train_config

    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("source: [unclosed\n")
    for load in (lambda p: load_config(p, {}), lambda p: load_train_config(p, {}), lambda p: load_recipe(p),
                 lambda p: load_classic_recipe(p)):
        with pytest.raises(ConfigError, match="'.*bad.yaml' is not valid YAML"):
            load(bad_yaml)
        with pytest.raises(ConfigError, match="not found. Fix: pass an existing YAML file"):
            load(tmp_path / "missing.yaml")
    nested = tmp_path / "recipe.yaml"
    nested.write_text("model:\n  krr_alpah: 0.2\n")
    with pytest.raises(ConfigError, match=r"config recipe.yaml: unknown key 'model.krr_alpah'. Fix: remove it "
                                          r"\(did you mean 'krr_alpha'\?\)"):
        load_classic_recipe(nested)
    nested.write_text("train: []\nregressor:\n  pcaa: 12\n")
    with pytest.raises(ConfigError, match=r"unknown key 'regressor.pcaa'. Fix: remove it \(did you mean 'pca'\?\)"):
        load_recipe(nested)
    with pytest.raises(ConfigError, match=r"command line: field 'epochs': expected .*; got -1"):
        load_train_config(None, {"data": str(tmp_path), "epochs": -1})
