"""The registry loader: layering, expansion, paths, env vars, --set, and every problem report."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, model_validator

from registry.errors import NO_VALUE, Problem, RegistryError, did_you_mean
from registry.loader import deep_merge, flatten, load_registry, parse_set

REGISTRY_DIR = Path(__file__).resolve().parents[2] / "registry"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Data(_Frozen):
    root: Path = Path("data/default")
    extra_root: Path | None = None
    channels: tuple[int, ...] = (0,)


class Model(_Frozen):
    backbone: Literal["tiny", "small"] = "tiny"
    drop_rate: float = Field(0.0, ge=0, lt=1)
    drop_path_rate: float = Field(0.0, ge=0, lt=1)
    pretrained: bool = False


class Train(_Frozen):
    seed: int = 0
    lr: float = Field(1e-3, gt=0)
    epochs: int = Field(10, ge=1)
    optimizer: str = "adamw"


class Toy(_Frozen):
    data: Data = Field(default_factory=Data)
    model: Model = Field(default_factory=Model)
    train: Train = Field(default_factory=Train)

    @model_validator(mode="after")
    def _small_needs_dropout(self) -> Toy:
        if self.model.backbone == "small" and self.model.drop_rate == 0:
            raise ValueError("backbone 'small' overfits without dropout; set model.drop_rate > 0")
        return self


class Search(_Frozen):
    metric: Literal["tss", "auc"] = "tss"
    n_trials: int = Field(10, ge=1)


def write(tmp_path: Path, text: str, name: str = "experiments.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def problems_of(excinfo: pytest.ExceptionInfo[RegistryError]) -> list[Problem]:
    return list(excinfo.value.problems)


def load_bad(tmp_path: Path, text: str, **kwargs) -> list[Problem]:
    with pytest.raises(RegistryError) as excinfo:
        load_registry(write(tmp_path, text), Toy, **kwargs)
    return problems_of(excinfo)


CHAIN = """
project: toy
defaults:
  model: {drop_rate: 0.1}
  data: {channels: [0, 1, 2]}
profiles:
  smoke: {train: {epochs: 1}}
experiments:
  base:
    description: the baseline
    train: {lr: 3e-4, optimizer: sgd}
  child:
    description: more dropout, fewer channels
    extends: base
    seeds: [0, 1]
    model: {drop_rate: 0.3}
    data: {channels: [5]}
  grandchild:
    description: small backbone
    extends: child
    model: {backbone: small}
"""


def test_extends_chain_merges_dicts_and_replaces_lists(tmp_path):
    registry = load_registry(write(tmp_path, CHAIN), Toy)
    spec = registry.resolve("grandchild")
    assert registry.lineage("grandchild") == ["grandchild", "child", "base"]
    assert spec.model.backbone == "small"  # own value
    assert spec.model.drop_rate == 0.3  # from child, over the default 0.1
    assert spec.train.lr == pytest.approx(3e-4)  # from base; the YAML string "3e-4" typed as float
    assert spec.train.optimizer == "sgd"
    assert spec.data.channels == (5,)  # the list replaced, not appended
    assert registry.project == "toy"
    assert registry.profiles == ("smoke",)


def test_reserved_keys_are_not_inherited(tmp_path):
    registry = load_registry(write(tmp_path, CHAIN), Toy)
    assert registry.experiments["child"].seeds == (0, 1)
    assert registry.experiments["grandchild"].seeds is None
    assert [run.name for run in registry.expand("grandchild")] == ["grandchild"]


def test_profile_applies_on_top_and_tags_the_group(tmp_path):
    registry = load_registry(write(tmp_path, CHAIN), Toy)
    runs = registry.expand("child", profile="smoke")
    assert [run.spec.train.epochs for run in runs] == [1, 1]
    assert {run.group for run in runs} == {"child@smoke"}
    assert registry.resolve("child").train.epochs == 10


GRID = """
experiments:
  sweep:
    description: seeds times learning rates times backbones
    model: {drop_rate: 0.2}
    seeds: [0, 1, 2]
    grid:
      train.lr: [1e-4, 3e-4]
      model.backbone: [tiny, small]
"""


def test_seeds_times_grid_expansion(tmp_path):
    runs = load_registry(write(tmp_path, GRID), Toy).expand("sweep")
    assert len(runs) == 3 * 2 * 2
    assert runs[0].name == "sweep/seed=0/train.lr=0.0001/model.backbone=tiny"
    assert runs[-1].name == "sweep/seed=2/train.lr=0.0003/model.backbone=small"
    assert len({run.name for run in runs}) == 12
    last = runs[-1]
    assert (last.spec.train.seed, last.spec.train.lr, last.spec.model.backbone) == (2, pytest.approx(3e-4), "small")
    assert dict(last.overrides) == {"train.seed": 2, "train.lr": pytest.approx(3e-4), "model.backbone": "small"}
    assert {run.group for run in runs} == {"sweep"} and {run.experiment for run in runs} == {"sweep"}


def test_set_is_typed_by_the_schema(tmp_path):
    registry = load_registry(write(tmp_path, CHAIN), Toy)
    spec = registry.resolve("base", sets=["train.lr=1e-2", "model.pretrained=true", "data.channels=[3, 4]"])
    assert spec.train.lr == pytest.approx(0.01)
    assert spec.model.pretrained is True
    assert spec.data.channels == (3, 4)
    assert registry.resolved_dict("base", sets=["train.epochs=2"])["train"]["epochs"] == 2


def test_set_on_a_swept_key_collapses_that_axis(tmp_path):
    registry = load_registry(write(tmp_path, GRID), Toy)
    runs = registry.expand("sweep", sets=["train.lr=5e-4", "train.seed=1"])
    assert [run.name for run in runs] == ["sweep/seed=1/train.lr=0.0005/model.backbone=tiny", "sweep/seed=1/train.lr=0.0005/model.backbone=small"]
    assert [run.spec.train.lr for run in runs] == [pytest.approx(5e-4)] * 2


def test_a_set_seed_names_the_run_even_without_seeds(tmp_path):
    registry = load_registry(write(tmp_path, CHAIN), Toy)
    assert [run.name for run in registry.expand("base", sets=["train.seed=3"])] == ["base/seed=3"]
    assert [run.name for run in registry.expand("base", sets=["train.lr=1e-2"])] == ["base"]


def test_env_vars_expand_with_and_without_default(tmp_path, monkeypatch):
    text = """
    defaults:
      data:
        root: ${TOY_DATA:-fallback}/images
        extra_root: ${TOY_EXTRA}
    experiments:
      exp: {description: env}
    """
    monkeypatch.delenv("TOY_DATA", raising=False)
    monkeypatch.setenv("TOY_EXTRA", "/abs/extra")
    spec = load_registry(write(tmp_path, text), Toy).resolve("exp")
    assert spec.data.root == tmp_path / "fallback" / "images"
    assert spec.data.extra_root == Path("/abs/extra")
    monkeypatch.setenv("TOY_DATA", "/mnt/solar")
    assert load_registry(write(tmp_path, text), Toy).resolve("exp").data.root == Path("/mnt/solar/images")


def test_unset_env_var_without_default_is_a_problem(tmp_path, monkeypatch):
    monkeypatch.delenv("TOY_MISSING", raising=False)
    (problem,) = load_bad(tmp_path, """
    experiments:
      exp:
        description: env
        data: {root: "${TOY_MISSING}/x"}
    """)
    assert (problem.line, problem.key) == (4, "experiments.exp.data.root")
    assert "TOY_MISSING is not set" in problem.message


def test_relative_paths_resolve_against_the_yaml_folder_or_the_cwd(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    path = write(folder, """
    experiments:
      exp:
        description: paths
        data: {root: shards, extra_root: /abs/flow}
    """)
    monkeypatch.chdir(tmp_path)
    registry = load_registry(path, Toy)
    spec = registry.resolve("exp")
    assert spec.data.root == folder / "shards"
    assert spec.data.extra_root == Path("/abs/flow")
    assert registry.resolve("exp", sets=["data.root=mine"]).data.root == tmp_path / "mine"
    assert registry.resolve("exp", sets=["data.extra_root=null"]).data.extra_root is None


def test_relative_schema_default_paths_resolve_against_the_yaml_folder(tmp_path):
    spec = load_registry(write(tmp_path, "experiments: {exp: {description: defaults only}}"), Toy).resolve("exp")
    assert spec.data.root == tmp_path / "data" / "default"


def test_search_block_is_validated_by_the_search_schema(tmp_path):
    text = """
    experiments:
      tune:
        description: a sweep
        search: {metric: auc, n_trials: 5}
    """
    registry = load_registry(write(tmp_path, text), Toy, search_schema=Search)
    assert registry.experiments["tune"].search == Search(metric="auc", n_trials=5)
    assert load_registry(write(tmp_path, text), Toy).experiments["tune"].search == {"metric": "auc", "n_trials": 5}
    (problem,) = load_bad(tmp_path, text.replace("n_trials: 5", "n_trails: 5"), search_schema=Search)
    assert (problem.line, problem.key, problem.value) == (4, "experiments.tune.search.n_trails", 5)
    assert problem.message == "unknown key; did you mean 'n_trials'?"


BASE = """
defaults:
  train: {lr: 3e-4}
experiments:
  exp1:
    description: one
  exp2:
    description: two
    extends: exp1
"""


@pytest.mark.parametrize(
    ("old", "new", "line", "key", "message"),
    [
        ("    extends: exp1", "    extends: exp1\n    model: {drop_path_rat: 0.2}", 9, "experiments.exp2.model.drop_path_rat", "unknown key; did you mean 'drop_path_rate'?"),
        ("    extends: exp1", "    extends: exp1\n    modle: {drop_rate: 0.2}", 9, "experiments.exp2.modle", "unknown key; did you mean 'model'?"),
        ("train: {lr: 3e-4}", "train: {lr: fast}", 2, "defaults.train.lr", "input should be a valid number"),
        ("    description: one", "    description: one\n    model: {drop_rate: 1.5}", 6, "experiments.exp1.model.drop_rate", "less than 1"),
        ("    description: one", "    description: one\n    model: {backbone: huge}", 6, "experiments.exp1.model.backbone", "input should be 'tiny' or 'small'"),
        ("    extends: exp1", "    extends: exp1\n    model: {backbone: small}", 6, "experiments.exp2", "backbone 'small' overfits without dropout"),
        ("    extends: exp1", "    extends: epx1", 8, "experiments.exp2.extends", "unknown experiment; did you mean 'exp1'? (available: exp1, exp2)"),
        ("    description: two\n", "", 6, "experiments.exp2", "missing description"),
        ("  exp2:", "  exp2:\n    grid: {train.lr: [1e-4, -1]}", 7, "experiments.exp2.grid.train.lr", "greater than 0"),
        ("  exp2:", "  exp2:\n    grid: {train.lrr: [1e-4]}", 7, "experiments.exp2.grid.train.lrr", "unknown key; did you mean 'lr'?"),
        ("  exp2:", "  exp2:\n    seeds: [0, one]", 7, "experiments.exp2.seeds", "list of integer seeds"),
        ("defaults:", "default:", 1, "default", "unknown key; did you mean 'defaults'?"),
        ("  exp1:\n", "  exp1:\n    descripton: typo\n", 5, "experiments.exp1.descripton", "unknown key; did you mean 'description'?"),
        ("    description: one", "    description: one: two", 5, "", "invalid YAML: mapping values are not allowed here"),
    ],
)
def test_each_bad_input_names_line_key_and_fix(tmp_path, old, new, line, key, message):
    assert old in BASE
    problems = load_bad(tmp_path, BASE.replace(old, new, 1))
    assert any(p.line == line and p.key == key and message in p.message for p in problems), problems
    assert all(p.file == str(tmp_path / "experiments.yaml") for p in problems)


def test_extends_cycle_is_spelled_out(tmp_path):
    (problem,) = load_bad(tmp_path, """
    experiments:
      exp_a: {description: a, extends: exp_b}
      exp_b: {description: b, extends: exp_a}
    """)
    assert problem.message.startswith("extends cycle: exp_a -> exp_b -> exp_a")
    assert (problem.line, problem.key) == (3, "experiments.exp_b.extends")


def test_inherited_bad_value_is_reported_once_where_it_was_set(tmp_path):
    problems = load_bad(tmp_path, """
    defaults:
      model: {drop_rate: 2}
    profiles:
      smoke: {train: {epochs: 1}}
    experiments:
      exp1: {description: one}
      exp2: {description: two, extends: exp1, seeds: [0, 1]}
    """)
    assert [(p.line, p.key, p.value) for p in problems] == [(2, "defaults.model.drop_rate", 2)]


def test_all_problems_are_reported_together_and_rendered_one_per_line(tmp_path):
    path = write(tmp_path, """
    experiments:
      exp1:
        description: one
        model: {drop_path_rat: 0.2}
      exp2:
        extends: exp1
        train: {epochs: 0}
    profiles:
      smoke: {train: {epochz: 1}}
    """)
    with pytest.raises(RegistryError) as excinfo:
        load_registry(path, Toy)
    rendered = str(excinfo.value).splitlines()
    assert rendered[0] == f"4 problems in {path}:"
    assert rendered[1] == f"{path}:4: experiments.exp1.model.drop_path_rat = 0.2: unknown key; did you mean 'drop_path_rate'?"
    assert rendered[2].startswith(f"{path}:5: experiments.exp2: missing description")
    assert rendered[3].startswith(f"{path}:7: experiments.exp2.train.epochs = 0: input should be greater than or equal to 1")
    assert rendered[4] == f"{path}:9: profiles.smoke.train.epochz = 1: unknown key; did you mean 'epochs'?"


def test_bad_set_items_are_reported_as_set_problems(tmp_path):
    registry = load_registry(write(tmp_path, BASE), Toy)
    with pytest.raises(RegistryError) as excinfo:
        registry.resolve("exp2", sets=["train.lr", "trian.lr=1", "model.drop_rate=high", "train.epochz=3"])
    got = {(p.file, p.key, p.message.split(";")[0]) for p in problems_of(excinfo)}
    assert got == {
        ("--set", "train.lr", "expected KEY=VALUE, e.g. --set train.lr=3e-4"),
        ("--set", "trian", "unknown key"),
        ("--set", "model.drop_rate", "input should be a valid number, unable to parse string as a number"),
        ("--set", "train.epochz", "unknown key"),
    }
    assert "did you mean 'train'?" in str(excinfo.value)
    assert "--set: model.drop_rate = 'high': input should be a valid number" in str(excinfo.value)


def test_unknown_experiment_or_profile_lists_the_valid_names(tmp_path):
    registry = load_registry(write(tmp_path, CHAIN), Toy)
    with pytest.raises(RegistryError, match=r"unknown experiment; did you mean 'child'\? \(available: base, child, grandchild\)"):
        registry.expand("chidl")
    with pytest.raises(RegistryError, match=r"unknown profile; did you mean 'smoke'\? \(available: smoke\)"):
        registry.resolve("base", profile="smok")
    with pytest.raises(RegistryError, match="unknown experiment"):
        registry.lineage("nope")


def test_missing_file_says_how_to_fix_it(tmp_path):
    with pytest.raises(RegistryError, match="pass --file or run from the folder holding experiments.yaml") as excinfo:
        load_registry(tmp_path / "experiments.yaml", Toy)
    assert str(tmp_path / "experiments.yaml") in str(excinfo.value)


def test_duplicate_keys_and_run_names_are_problems(tmp_path):
    problems = load_bad(tmp_path, """
    experiments:
      exp:
        description: dup
        description: dup again
        grid: {train.lr: [1e-4, 0.0001]}
    """)
    assert {(p.line, p.key) for p in problems} == {(4, "experiments.exp.description"), (2, "experiments.exp")}


def test_public_helpers():
    assert parse_set("train.lr=3e-4") == ("train.lr", "3e-4")
    assert parse_set("model.pretrained=true") == ("model.pretrained", True)
    assert parse_set("data.channels=[1, 2]") == ("data.channels", [1, 2])
    assert parse_set("a.b=x=y") == ("a.b", "x=y")
    assert flatten({"a": {"b": 1, "c": {"d": [1]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1], "e": {}}
    base = {"a": {"b": 1, "c": 2}, "l": [1, 2]}
    assert deep_merge(base, {"a": {"c": 3}, "l": [9]}) == {"a": {"b": 1, "c": 3}, "l": [9]}
    assert base == {"a": {"b": 1, "c": 2}, "l": [1, 2]}  # inputs untouched
    assert did_you_mean("lrr", ["lr", "seed"]) == "; did you mean 'lr'?"
    assert did_you_mean("zzz", ["lr", "seed"]) == ""
    assert str(Problem("x.yaml", 3, "a.b", NO_VALUE, "msg")) == "x.yaml:3: a.b: msg"


def test_registry_package_never_imports_arflare():
    for module in REGISTRY_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(name.split(".")[0] == "arflare" for name in names), module
