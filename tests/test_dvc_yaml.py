"""dvc.yaml says exactly what each stage script reads: params sections, code and data deps."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from lorapipe.core.artifacts import PATHS
from lorapipe.core.stage_code import code_files
from tests.workspace import ROOT, dvc_stages

# The pipeline as DVC resolves it (${paths.NAME} filled in).
STAGES = dvc_stages()


def test_dvc_yaml_is_the_only_pipeline():
    """`dvc status` and `dvc exp run` see every pipeline file: one that experiments never run (the export
    once was) would keep `dvc status` from ever being clean."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert [f for f in tracked.splitlines() if Path(f).name in ("dvc.yaml", "dvc.yml")] == ["dvc.yaml"]


def script_of(stage: dict) -> str:
    return re.search(r"stages/\w+\.py", stage["cmd"]).group(0)


def sections_read(script: str) -> set[str]:
    """params.yaml's sections the script loads: settings.yaml's (ops) are untracked on purpose, so they re-run
    nothing and are no `dvc exp show` column."""
    from lorapipe.core.params import FILE_OF, PARAMS_FILE, SECTIONS

    classes = set(re.findall(r"load_params\((\w+)\)", (ROOT / script).read_text()))
    return {name for name, cls in SECTIONS.items() if cls.__name__ in classes and FILE_OF[name] == PARAMS_FILE}


@pytest.mark.parametrize("name", list(STAGES))
def test_code_deps_are_the_modules_the_script_imports(name):
    stage = STAGES[name]
    script = script_of(stage)
    declared = {d for d in stage["deps"] if d.startswith(("stages/", "lorapipe/"))}
    assert declared == set(code_files(ROOT / script))


@pytest.mark.parametrize("name", list(STAGES))
def test_params_are_the_sections_the_script_loads(name):
    stage = STAGES[name]
    declared = {p.split(".")[0] for p in stage.get("params", [])}
    assert declared == sections_read(script_of(stage))


def outputs_of(stage: dict) -> set[str]:
    """The paths of a stage's outs, metrics and plots."""
    entries = [entry for kind in ("outs", "metrics", "plots") for entry in stage.get(kind, [])]
    return {path for entry in entries for path in (entry if isinstance(entry, dict) else [entry])}


ALL_OUTPUTS = set().union(*map(outputs_of, STAGES.values()))


@pytest.mark.parametrize("name", list(STAGES))
def test_command_paths_are_declared(name):
    """Every data/, models/ or metrics/ path on the command line is a dep or an out of the stage."""
    stage = STAGES[name]
    declared = set(stage.get("deps", [])) | outputs_of(stage)
    for arg in stage["cmd"].split()[2:]:
        if arg.startswith(("data/", "models/", "metrics/")):
            assert arg in declared, f"{name}: {arg} is not a dep or out"


@pytest.mark.parametrize("name", list(STAGES))
def test_every_output_is_on_the_command_line(name):
    """A stage writes where its command line says: an out it is not told about would be written by a name
    in its code that dvc.yaml can rename without the script noticing."""
    stage = STAGES[name]
    args = set(stage["cmd"].split()[2:])
    assert outputs_of(stage) <= args, f"{name}: {sorted(outputs_of(stage) - args)} not on the command line"


def test_the_paths_block_names_each_pipeline_output_once():
    """dvc.yaml's `vars: paths` (lorapipe.core.artifacts.PATHS, what readers and tests use) is exactly the outputs
    of its stages, one name each: a renamed output cannot leave a reader behind."""
    named = [path.as_posix() for path in PATHS.values()]
    assert len(named) == len(set(named))
    assert set(named) == set().union(*map(outputs_of, dvc_stages().values()))


def test_no_stage_types_a_path():
    """Every data/, models/ and metrics/ path in a stage is a ${paths.NAME}: typed out, it would be a second
    spelling that a rename in the paths block misses."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    typed = re.findall(r"(?<![\w/}])(?:data|models|metrics)/[\w./-]+", yaml.safe_dump(stages))
    assert not typed


def test_paths_outside_dvc_are_not_outputs():
    """Checkpoints and the export command's files stay out of dvc.yaml: an out would be hashed into dvc.lock
    (and a persisted one switches off the run-cache that restores train)."""
    from lorapipe.core import artifacts

    outside = {artifacts.CHECKPOINTS, *artifacts.EXPORT_OUTPUTS}
    pipeline = set().union(*map(outputs_of, dvc_stages().values())) | {
        d for s in dvc_stages().values() for d in s["deps"]
    }
    assert not {path.as_posix() for path in outside} & pipeline


def test_listed_keys_are_real_params():
    """A stage listing single keys (`eval.seed`) names keys that exist: a typo would track nothing."""
    from lorapipe.core.params import SECTIONS

    for name, stage in STAGES.items():
        for param in stage.get("params", []):
            section, _, key = param.partition(".")
            assert section in SECTIONS, f"{name}: {param}"
            assert not key or key in {f.name for f in dataclasses.fields(SECTIONS[section])}, f"{name}: {param}"


def test_generate_base_tracks_exactly_the_settings_its_outputs_record():
    """The base outputs hang on BASE_SETTINGS (recorded in the file, checked by evaluate): DVC must
    re-run generate_base when one changes, and only then (not for eval.report_samples, lora.*, ...)."""
    from lorapipe.eval.evaluation import BASE_SETTINGS

    assert STAGES["generate_base"]["params"] == list(BASE_SETTINGS)
    assert "data/base_outputs.json" in STAGES["evaluate"]["deps"]


def test_only_what_a_reviewer_compares_is_a_metric():
    """Bookkeeping (checksums, byte and drop counts, timings) stays out of `dvc exp show`."""
    metrics = {path for stage in STAGES.values() for entry in stage.get("metrics", []) for path in entry}
    assert metrics == {"metrics/train.json", "metrics/eval.json"}


def test_every_lora_key_re_runs_train_and_evaluate_only():
    """lora.method, like lora.r, is tracked by train alone (the whole `lora` section); evaluate re-runs because it
    reads train's output. No other stage reads a lora key, so `dvc exp run -S lora.method=dora` re-runs those two."""
    import dataclasses

    from lorapipe.core.params import LoraParams

    keys = {f"lora.{f.name}" for f in dataclasses.fields(LoraParams)}
    assert "lora.method" in keys
    stages = dvc_stages()
    tracking = {name for name, s in stages.items() for p in s.get("params", []) if p == "lora" or p in keys}
    assert tracking == {"train"}
    assert PATHS["trained"].as_posix() in stages["evaluate"]["deps"]
    assert not [name for name, s in stages.items() if PATHS["trained"].as_posix() in s.get("deps", [])][1:]


def test_artifacts_name_cached_outputs_by_their_paths_name():
    """dvc.yaml's `artifacts:` name the trained model and its base for `dvc artifacts get`: each path is its
    ${paths.NAME} (one spelling), a cached out of a stage (the remote holds it), with a type, a description and
    labels; the merged export, written outside DVC, is none of them."""
    from dvc.repo.artifacts import name_is_compatible

    from lorapipe.core.artifacts import EXPORT_OUTPUTS

    declared = yaml.safe_load((ROOT / "dvc.yaml").read_text())["artifacts"]
    assert {"trained", "base"} <= set(declared)
    cached = {
        out if isinstance(out, str) else next(iter(out))
        for stage in STAGES.values()
        for out in stage.get("outs", [])
        if isinstance(out, str) or next(iter(out.values())).get("cache", True)
    }
    for name, artifact in declared.items():
        assert name_is_compatible(name), name
        key = re.fullmatch(r"\$\{paths\.(\w+)\}", artifact["path"])
        assert key and PATHS[key[1]].as_posix() in cached, (name, artifact["path"])
        assert PATHS[key[1]] not in EXPORT_OUTPUTS
        assert artifact["type"] == "model" and artifact["desc"] and artifact["labels"], name
