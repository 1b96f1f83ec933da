from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from lorapipe.core.cli import UserError
from lorapipe.core.params import (
    FILE_OF,
    PARAM_FILES,
    SECTIONS,
    DataParams,
    LoraParams,
    ModelParams,
    OpsParams,
    SampleParams,
    TrainParams,
    load_params,
    parse_section,
    read_params_file,
)
from lorapipe.workspace.profiles import apply_profile
from tests.workspace import (
    ROOT,
    assert_one_line_error,
    child_env,
    committed_params_text,
    default_params,
    params_of,
    sh,
    write_param_files,
)

NO_DEFAULT = (dataclasses.MISSING, dataclasses.MISSING)


def test_params_yaml_lists_every_key_and_loads_and_is_the_only_home_of_the_defaults():
    """The committed params.yaml and settings.yaml spell out every key of the sections each holds, and load;
    the dataclasses declare no default that could drift from them (an experiment's pull request changes
    their values)."""
    for name in PARAM_FILES:
        assert set(yaml.safe_load(committed_params_text(name))) == {s for s in SECTIONS if FILE_OF[s] == name}
    raw = default_params()
    for section, cls in SECTIONS.items():
        parse_section(cls, raw[section])
        assert set(raw[section]) == {f.name for f in dataclasses.fields(cls)}, section
        defaulted = [f.name for f in dataclasses.fields(cls) if (f.default, f.default_factory) != NO_DEFAULT]
        assert not defaulted, section


def write_params(tmp_path: Path, text: str) -> Path:
    """The params files in `tmp_path` (returned) = `text` laid over the committed defaults where it is a
    mapping of sections (so an error names only the keys `text` sets), else params.yaml = `text` itself."""
    try:
        overrides = yaml.safe_load(text)
    except yaml.YAMLError:
        overrides = None
    params = default_params()
    if isinstance(overrides, dict) and all(isinstance(v, dict) for v in overrides.values()):
        for section, values in overrides.items():
            params[section].update(values)
        write_param_files(tmp_path, params)
    else:
        write_param_files(tmp_path, params)
        (tmp_path / "params.yaml").write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lora:\n  rr: 8\n", "unknown key 'lora.rr'; did you mean 'lora.r'?"),
        ("sample:\n  sizee: 10\n", "did you mean 'sample.size'?"),
        ("lora:\n  r: 0\n", "'lora.r' must be >= 1, got 0"),
        ("lora:\n  r: eight\n", "'lora.r' must be an integer, got 'eight' (str)"),
        ("lora:\n  r: 8.5\n", "'lora.r' must be an integer"),
        ("lora:\n  r: true\n", "'lora.r' must be an integer"),
        ("train:\n  lr: -0.1\n", "'train.lr' must be >= 0, got -0.1"),
        ("train:\n  lr: .nan\n", "'train.lr' must be a number"),
        ("split:\n  test_size: 1.5\n", "'split.test_size' must be <= 0.9, got 1.5"),
        ("split:\n  test_size: 0.6\n  val_size: 0.4\n", "split.test_size + split.val_size must be < 1"),
        ("quant:\n  bits: 3\n", "'quant.bits' must be one of 4, 8, 16; got 3"),
        ("lora:\n  target_modules: q_proj\n", "'lora.target_modules' must be a list of names"),
        ("clean:\n  min_title_chars: 50\n  max_title_chars: 10\n", "clean.min_title_chars (50) is above"),
        ("train:\n  grad_checkpointing: 'yes'\n", "'train.grad_checkpointing' must be true or false"),
        ("lora: [1, 2]\n", "'lora' must be a mapping of keys"),
        ("lora: {r: 8\n", "is not valid YAML"),
        ("train:\n  log_every: 5\n", "'train.log_every' is now 'ops.log_every' in settings.yaml (re-runs nothing)"),
        ("ops:\n  checkpoint_mirror: gs://x\n", "settings.yaml: ops.checkpoint_mirror must be '', 'remote' or s3://"),
    ],
)
def test_bad_params_fail_with_one_line_naming_the_key(tmp_path, text, message):
    path = write_params(tmp_path, text)
    section = text.split(":")[0]
    with pytest.raises(UserError) as err:
        load_params(SECTIONS[section], path)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_every_problem_of_a_section_is_in_the_one_error(tmp_path):
    root = write_params(tmp_path, "train:\n  lr: -1\n  micro_batch: 0\n  lrr: 3\n  log_every: 5\n")
    with pytest.raises(UserError) as err:
        load_params(TrainParams, root)
    message = str(err.value)
    assert message.startswith(f"{root / 'params.yaml'}: 4 problems in 'train': ")
    for part in (
        "'train.lr' must be >= 0",
        "'train.micro_batch' must be >= 1",
        "unknown key 'train.lrr'",
        "ops.log_every",
    ):
        assert part in message
    assert "\n" not in message


def test_missing_params_file(tmp_path):
    with pytest.raises(UserError, match=re.escape("params.yaml: not found")):
        load_params(LoraParams, tmp_path)


def test_ints_widen_to_floats(tmp_path):
    lora = load_params(LoraParams, write_params(tmp_path, "lora:\n  alpha: 16\n"))
    assert lora.alpha == 16.0 and isinstance(lora.alpha, float)
    assert lora.r == default_params()["lora"]["r"]


def test_a_missing_key_or_section_is_one_line_naming_it(tmp_path):
    """No default exists outside the params files: a key one lacks is an error saying where to take it from."""
    params = default_params()
    del params["lora"]["r"], params["lora"]["dropout"], params["ops"]
    params["lora"]["rr"] = 8  # a misspelt key is named in the same line
    write_param_files(tmp_path, params)
    hint = "({0} sets every key: take it, with its meaning, from `git show HEAD:{0}`)"
    for cls, message in [
        (
            LoraParams,
            f"{tmp_path / 'params.yaml'}: 2 problems in 'lora': unknown key 'lora.rr'; did you mean 'lora.r'?; ",
        ),
        (LoraParams, f"; missing 'lora.r', 'lora.dropout' {hint.format('params.yaml')}"),
        (OpsParams, f"{tmp_path / 'settings.yaml'}: no 'ops' section {hint.format('settings.yaml')}"),
    ]:
        with pytest.raises(UserError) as err:
            load_params(cls, tmp_path)
        assert message in str(err.value) and "\n" not in str(err.value)


def test_a_params_yaml_from_before_settings_yaml_is_one_line_naming_its_keys_and_their_file(tmp_path):
    """A workspace whose params.yaml still holds `ops` and `export` (a merge that kept them, an old branch's
    file): every stage and profile stops in one line naming each key and settings.yaml, and nothing is written,
    rather than run on settings.yaml's values while params.yaml says otherwise."""
    from lorapipe.workspace.profiles import apply_profile

    params = default_params()
    write_param_files(tmp_path, params)
    old = tmp_path / "params.yaml"
    old.write_text(
        old.read_text() + yaml.safe_dump({"export": params["export"], "ops": params["ops"]}, sort_keys=False)
    )
    before = {name: (tmp_path / name).read_text() for name in PARAM_FILES}
    moved = ", ".join(f"{s}.{k}" for s in ("export", "ops") for k in params[s])
    for cls in SECTIONS.values():  # settings.yaml's sections too: their values here would go unread
        with pytest.raises(UserError) as err:
            load_params(cls, tmp_path)
        assert str(err.value).startswith(f"{old}: {moved} belong in settings.yaml now (no stage tracks it")
        assert "\n" not in str(err.value)
    with pytest.raises(UserError, match=re.escape(f"{old}: {moved} belong in settings.yaml")):
        apply_profile({"lora": {"r": 8}}, tmp_path)
    assert {name: (tmp_path / name).read_text() for name in PARAM_FILES} == before


def committed_files(root: Path) -> dict[str, str]:
    """params.yaml and settings.yaml as committed, comments and all, written into `root`; their texts."""
    texts = {name: committed_params_text(name) for name in PARAM_FILES}
    for name, text in texts.items():
        (root / name).write_text(text)
    return texts


def texts_in(root: Path) -> dict[str, str]:
    return {name: (root / name).read_text() for name in PARAM_FILES}


def test_offline_profile_applies_keeps_comments_and_validates(tmp_path):
    committed_files(tmp_path)
    overrides = yaml.safe_load((ROOT / "profiles/offline.yaml").read_text())
    changed = apply_profile(overrides, tmp_path)
    assert {"model.name", "data.url", "ops.save_every"} <= set(changed)
    text = texts_in(tmp_path)
    assert "# lorapipe parameters" in text["params.yaml"] and "# lorapipe settings" in text["settings.yaml"]
    assert "  save_every: 6              # steps between checkpoints" in text["settings.yaml"]  # each key's comment
    assert "ops" not in yaml.safe_load(text["params.yaml"])  # each section in its own file
    assert load_params(ModelParams, tmp_path).name.endswith(".gguf")
    assert load_params(OpsParams, tmp_path).save_every == overrides["ops"]["save_every"]
    assert load_params(LoraParams, tmp_path).r == default_params()["lora"]["r"]  # untouched keys stay
    assert apply_profile(overrides, tmp_path) == []  # idempotent


def test_profile_with_bad_value_leaves_params_untouched(tmp_path):
    """Neither file is written unless both load: a good lora.r is not applied with a bad ops.save_every."""
    original = committed_files(tmp_path)
    with pytest.raises(UserError, match=re.escape("'lora.r' must be >= 1")):
        apply_profile({"lora": {"r": 0}}, tmp_path)
    with pytest.raises(UserError, match=re.escape("settings.yaml + profile: 'ops.save_every' must be >= 1")):
        apply_profile({"lora": {"r": 8}, "ops": {"save_every": 0}}, tmp_path)
    assert texts_in(tmp_path) == original


def test_profile_command_takes_single_keys_too(tmp_path, monkeypatch):
    from lorapipe.workspace.profiles import main

    committed_files(tmp_path)
    monkeypatch.chdir(ROOT)  # profiles/ is found from the repository root
    main(["colab", "--set", "lora.r=8", "--set", "train.lr=0.0001", "--dir", str(tmp_path)])
    assert load_params(LoraParams, tmp_path).r == 8 and load_params(TrainParams, tmp_path).lr == 0.0001
    assert load_params(OpsParams, tmp_path).checkpoint_mirror == "remote"
    # `dvc exp run -S`'s spelling with the file: settings.yaml's keys, and no other file's.
    main(["colab", "--set", "settings.yaml:ops.log_every=1", "--set", "params.yaml:lora.r=4", "--dir", str(tmp_path)])
    assert load_params(OpsParams, tmp_path).log_every == 1 and load_params(LoraParams, tmp_path).r == 4
    for setting, message in [
        ("lora.r", "expected SECTION.KEY=VALUE"),
        ("settings.yaml:lora.r=8", "--set settings.yaml:lora.r=8: 'lora' is in params.yaml, not settings.yaml"),
    ]:
        with pytest.raises(UserError, match=re.escape(message)):
            main(["colab", "--set", setting, "--dir", str(tmp_path)])


@pytest.mark.parametrize(
    ("profile", "setting", "message"),
    [
        ("offline.yaml", "lora.r=!!python/object/apply:os.system ['touch pwned']", "--set lora.r:"),
        ("offline.yaml", "lora.r=[8", "--set lora.r:"),
        ("lora: {r: 8\n", "lora.r=8", "profiles/bad.yaml: line 2"),
        ("lora: !!python/name:os.system\n", "lora.r=8", "profiles/bad.yaml: line 1"),
    ],
    ids=["tag-in-set", "broken-set", "broken-profile", "tag-in-profile"],
)
def test_a_tag_or_broken_yaml_in_a_profile_or_set_is_one_line(tmp_path, profile, setting, message):
    (tmp_path / "profiles").mkdir()
    source = ROOT / "profiles" / profile
    (tmp_path / "profiles/bad.yaml").write_text(source.read_text() if source.is_file() else profile)
    original = committed_files(tmp_path)
    command = [sys.executable, "-m", "lorapipe.workspace.profiles", "bad", "--set", setting]
    result = subprocess.run(command, cwd=tmp_path, env=child_env(), capture_output=True, text=True)
    assert_one_line_error(result, message, "is not valid YAML")
    assert texts_in(tmp_path) == original
    assert not (tmp_path / "pwned").exists()


def test_a_value_nested_thousands_deep_is_one_line_naming_the_key(tmp_path, monkeypatch):
    """`--set "lora.r=[[[[..."` 3,000 deep, or the same in params.yaml: no RecursionError, params.yaml untouched."""
    from lorapipe.workspace.profiles import main

    deep = "[" * 3000 + "]" * 3000
    original = committed_files(tmp_path)
    monkeypatch.chdir(ROOT)  # profiles/ is found from the repository root
    with pytest.raises(UserError, match=r"^--set lora\.r: is nested too deeply to read"):
        main(["offline", "--set", f"lora.r={deep}", "--dir", str(tmp_path)])
    assert texts_in(tmp_path) == original
    params = tmp_path / "params.yaml"
    params.write_text(original["params.yaml"].replace("\n  r: 16", f"\n  r: {deep}"))
    for load in (lambda: load_params(TrainParams, tmp_path), lambda: main(["offline", "--dir", str(tmp_path)])):
        with pytest.raises(UserError, match=rf"^{re.escape(str(params))}: line \d+ \(lora\.r\) is nested too deeply"):
            load()


def test_an_ops_edit_mid_run_stops_nothing_and_a_tracked_edit_still_does(tmp_path, monkeypatch):
    """What train checks at each log step: ops.* changes no output (no stage tracks settings.yaml)."""
    from lorapipe.core.params import check_params_unchanged

    monkeypatch.setattr("lorapipe.core.params._READ", {})  # this process's record of what it read: this test's only
    committed_files(tmp_path)
    load_params(TrainParams, tmp_path), load_params(OpsParams, tmp_path)
    settings, params = tmp_path / "settings.yaml", tmp_path / "params.yaml"
    edited = settings.read_text().replace("log_every: 10", "log_every: 1").replace("keep_runs: 3", "keep_runs: 1")
    settings.write_text(edited.replace("checkpoint_mirror: ''", "checkpoint_mirror: remote"))
    check_params_unchanged()  # the run goes on
    params.write_text(params.read_text().replace("lr: 0.0002", "lr: 0.01"))
    with pytest.raises(UserError, match=r"^params\.yaml: train\.lr changed while this stage ran"):
        check_params_unchanged()


def test_one_flattener_serves_loaded_params_and_dvc_json_alike():
    """MLflow logs loaded params and the results page reads `dvc exp show`'s nested YAML: the same dotted keys."""
    from lorapipe.core.params import flatten

    raw = default_params()
    loaded = {section: parse_section(cls, raw[section]) for section, cls in SECTIONS.items()}
    assert flatten(loaded) == flatten(raw)
    assert flatten({"lora": {"r": 8, "target_modules": ["q_proj", "v_proj"]}}) == {
        "lora.r": 8,
        "lora.target_modules": "q_proj,v_proj",
    }


@pytest.mark.parametrize(
    ("script", "sections", "key"),
    [
        ("train.py", {"lora": {"r": 0}}, "lora.r"),
        ("evaluate.py", {"eval": {"max_new_tokens": 0}}, "eval.max_new_tokens"),
    ],
)
def test_a_params_mistake_is_reported_before_loading_torch(tmp_path, script, sections, key):
    """`dvc exp run -S lora.r=0`: the stages an experiment re-runs say so in one line before torch,
    transformers and PEFT are imported (a minute on a loaded machine), not after."""
    from tests.workspace import assert_one_line_error, stage_args, write_params

    write_params(tmp_path, **sections)
    args = stage_args("train") if script == "train.py" else stage_args("evaluate")
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "stages" / script), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
    )
    assert_one_line_error(result, key, ">= 1")
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")
    }
    assert "lorapipe.core.params" in imported
    assert not imported & {"torch", "transformers", "peft"}


# YAML 1.1 (PyYAML) and YAML 1.2 (DVC's ruamel.yaml) read these differently: octal 64 or decimal 100,
# True or the string "yes", the string "2e-4" or a float.
VERSION_SENSITIVE = "sample:\n  size: 0100\ndata:\n  member: yes\nmodel:\n  revision: on\ntrain:\n  lr: 2e-4\n"


def test_params_are_read_as_dvc_reads_them(tmp_path):
    from dvc.utils.serialize import load_yaml  # what `dvc repro` and `dvc params diff` read params.yaml with

    path = tmp_path / "params.yaml"
    path.write_text(VERSION_SENSITIVE)
    raw = read_params_file(path)
    assert raw == load_yaml(path)
    # The typed values of these keys, the rest of each section from the committed defaults.
    assert params_of(SampleParams, **raw["sample"]).size == 100
    assert params_of(DataParams, **raw["data"]).member == "yes"
    assert params_of(ModelParams, **raw["model"]).revision == "on"
    assert params_of(TrainParams, **raw["train"]).lr == 2e-4


def test_a_profile_is_read_as_dvc_reads_params(tmp_path, monkeypatch):
    from dvc.utils.serialize import load_yaml

    from lorapipe.workspace.profiles import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles/odd.yaml").write_text(VERSION_SENSITIVE)
    committed_files(tmp_path)
    params = tmp_path / "params.yaml"
    main(["odd", "--set", "eval.max_samples=010"])
    assert load_yaml(params)["sample"]["size"] == 100 and load_yaml(params)["eval"]["max_samples"] == 10
    assert load_yaml(params)["data"]["member"] == "yes"


def test_the_sample_stage_samples_the_size_that_dvc_records(repo):
    """A real `dvc repro`: the rows sampled, dvc.lock and `dvc params diff` agree on one value."""
    from dvc.utils.serialize import load_yaml

    text = (repo / "params.yaml").read_text()
    text, sizes = re.subn(r"(?m)^(sample:\n  size:) \d+", r"\1 0100", text)  # the comment after it stays
    text, members = re.subn(r"(?m)^(  member:) .*$", r"\1 yes", text)  # a gzip, not a zip: the member is not read
    assert sizes == members == 1, text
    (repo / "params.yaml").write_text(text)
    sh(repo, "dvc", "repro", "sample")
    sample = json.loads((repo / "metrics/sample.json").read_text())
    assert sample["requested"] == sample["sampled"] == 100
    assert pq.read_metadata(repo / "data/sample.parquet").num_rows == 100
    lock = load_yaml(repo / "dvc.lock")["stages"]
    assert lock["sample"]["params"]["params.yaml"]["sample.size"] == 100
    assert lock["download"]["params"]["params.yaml"]["data.member"] == "yes"
    diff = json.loads(sh(repo, "dvc", "params", "diff", "--json").stdout)["params.yaml"]
    assert diff["sample.size"]["new"] == 100 and diff["data.member"]["new"] == "yes"


def test_seed_bounds_are_what_numpy_and_torch_take():
    """A seed the params accept never fails in numpy's generator or torch.manual_seed; one beyond is refused."""
    import numpy as np
    import torch

    for cls in SECTIONS.values():
        for f in dataclasses.fields(cls):
            if f.name != "seed":
                continue
            low, high = f.metadata["min"], f.metadata["max"]
            np.random.default_rng(low)
            with pytest.raises(ValueError):
                np.random.default_rng(low - 1)
            if high is not None:
                torch.manual_seed(high)
                with pytest.raises(ValueError):
                    torch.manual_seed(high + 1)
