import pandas as pd
import pytest
from pydantic import ValidationError

from foldstack.config import (
    CompetitionConfig,
    available,
    build_config,
    config_path,
    load_competition,
    parse_overrides,
    valid_keys,
)
from foldstack.errors import ConfigError


@pytest.mark.parametrize("name", available("competitions"))
def test_every_competition_config_loads(name):
    cfg = load_competition(name)
    assert cfg.name == name
    assert cfg.columns.target in cfg.table.train_only
    assert cfg.columns.id not in cfg.table.train_only


def test_isic2024_schema_matches_the_real_test_file(fixture_dir):
    cfg = load_competition("isic2024")
    header = list(pd.read_csv(fixture_dir / "test-metadata.csv", nrows=0).columns)
    assert cfg.table.test_columns == header
    assert len(cfg.table.train_columns) == 55
    assert len(cfg.table.test_columns) == 44
    assert len(cfg.table.train_only) == 11
    assert cfg.metric == "pauc80" and cfg.code_competition and cfg.slug == "isic-2024-challenge"


def test_isic2020_is_a_file_competition_scored_by_auc():
    cfg = load_competition("isic2020")
    assert cfg.metric == "auc" and not cfg.code_competition
    assert cfg.images.kind == "jpeg_dir"


def test_overrides_set_typed_values():
    cfg = load_competition("isic2024", "folds.k=3 folds.seed=7 synthetic.pos_rate=0.02 runs_dir=/tmp/x")
    assert (cfg.folds.k, cfg.folds.seed, cfg.synthetic.pos_rate, cfg.runs_dir) == (3, 7, 0.02, "/tmp/x")


def test_parse_overrides_quotes_and_yaml_values():
    assert parse_overrides('a.b=1 c="x y" d=true e=[1,2]') == [
        ("a.b", 1),
        ("c", "x y"),
        ("d", True),
        ("e", [1, 2]),
    ]
    assert parse_overrides(["a=1"]) == [("a", 1)]
    assert parse_overrides(None) == []


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        load_competition("isic2024", "folds.kk=3")
    msg = str(e.value)
    assert "'folds.kk'" in msg and "folds.k" in msg and "folds.seed" in msg


def test_wrong_type_names_key_and_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        load_competition("isic2024", "folds.k=three")
    msg = str(e.value)
    assert "folds.k" in msg and "three" in msg and "Valid keys" in msg


def test_out_of_range_value_is_refused():
    with pytest.raises(ConfigError, match=r"folds\.k"):
        load_competition("isic2024", "folds.k=1")


def test_value_is_not_a_section():
    with pytest.raises(ConfigError, match="is a value, not a section"):
        load_competition("isic2024", "folds.k.x=1")


def test_malformed_override():
    with pytest.raises(ConfigError, match=r"key\.path=value"):
        load_competition("isic2024", "folds.k")


def test_unknown_competition_lists_names():
    with pytest.raises(ConfigError) as e:
        config_path("competitions", "isic2099")
    assert "isic2024" in str(e.value) and "isic2020" in str(e.value)


def test_configs_are_read_only():
    cfg = load_competition("isic2024")
    with pytest.raises(ValidationError):
        cfg.folds.k = 10  # type: ignore[misc]


def test_free_form_mapping_accepts_sub_keys():
    cfg = load_competition("isic2024", "table.columns.new_col=float")
    assert cfg.table.columns["new_col"] == "float"
    assert "table.columns.<key>" in valid_keys(CompetitionConfig)


def test_role_columns_must_exist():
    base = load_competition("isic2024").model_dump()
    base["columns"]["group"] = "no_such_column"
    with pytest.raises(ConfigError, match=r"columns\.group"):
        build_config(CompetitionConfig, [base])


def test_stack_configs_inherit_from_their_base_models_merged_by_name(tmp_path, monkeypatch):
    from foldstack import config as config_module
    from foldstack.stage2.config import load_stack_config, stack_tree

    base, gbdt3 = stack_tree("lgb_xgb_cb"), stack_tree("gbdt3")
    assert [m["name"] for m in gbdt3["models"]] == ["lgbm", "xgb", "cb"]
    assert gbdt3["models"][:2] == base["models"][:2]  # untouched models come from the base as they are
    cb = gbdt3["models"][2]
    assert "one_hot_max_size" not in cb["params"]  # null in the derived config removes the base's key
    assert cb["params"]["rsm"] == 0.5 and cb["search"]["depth"] == {"type": "int", "low": 3, "high": 7}
    assert gbdt3["blend"] == {"method": "rank", "weights": "tune"} and gbdt3["tuning"] == base["tuning"]
    assert load_stack_config("isic2024", "gbdt3").blend.weights == "tune"
    # a new model name is appended; a base chain that loops is refused
    root = tmp_path / "configs"
    (root / "stack").mkdir(parents=True)
    (root / "competitions").mkdir()
    (root / "stack" / "a.yaml").write_text("base: b\nmodels: [{name: extra, kind: knn}]\n")
    (root / "stack" / "b.yaml").write_text("base: a\n")
    monkeypatch.setattr(config_module, "CONFIG_ROOT", root)
    with pytest.raises(ConfigError, match=r"circular base chain a -> b -> a"):
        stack_tree("a")
    (root / "stack" / "b.yaml").write_text("models: [{name: knn5, kind: knn}]\n")
    assert [m["name"] for m in stack_tree("a")["models"]] == ["knn5", "extra"]


def test_the_old_default_stack_name_still_works_with_a_one_line_notice(capsys):
    from foldstack.stage2.config import DEFAULT_STACK, load_stack_config

    old = load_stack_config("isic2024", "lgbm")
    new = load_stack_config("isic2024", DEFAULT_STACK)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "STACK=lgbm is the old name of configs/stack/lgb_xgb_cb.yaml" in err
    assert old.run == "lgbm" and new.run == DEFAULT_STACK  # the old name keeps its run folder
    assert old.model_dump(exclude={"run"}) == new.model_dump(exclude={"run"})
