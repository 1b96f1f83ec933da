"""Typed params: one frozen dataclass per section, validated once on load.

A stage calls `load_params(CleanParams)` and gets a `CleanParams`; unknown, missing and mistyped
keys and out-of-range values stop it with one line naming the file, every such key of the section and
what was expected. Each section lives in one file (FILE_OF): params.yaml holds what the stages compute
with, the file DVC users edit (`dvc exp run -S`, profiles/*.yaml) and compare (`dvc params diff`,
`dvc exp show`, which list every key of it); settings.yaml holds what re-runs no stage (`ops`: how runs
are operated; `export`: what the export, outside DVC, writes), which no stage tracks, so it is no
experiment column. Each file is the one home of its keys' values (the defaults are the real run: full
dataset, TinyLlama, QLoRA nf4) and of their meaning, as the comment beside each. The fields here carry
only the type and the bounds the loader checks, so no default can drift.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import time
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ruamel.yaml import YAML, YAMLError
from ruamel.yaml.constructor import DuplicateKeyError

from lorapipe.core.cli import UserError
from lorapipe.core.credentials import HOW_TO_GIVE_CREDENTIALS, redact, url_credentials

PARAMS_FILE = "params.yaml"  # what the stages compute with: every key is a `dvc exp show` column
SETTINGS_FILE = "settings.yaml"  # what re-runs no stage: no stage tracks it, so DVC shows none of it


def param(*, min: float | None = None, max: float | None = None, choices: tuple = ()) -> Any:
    """A field with the bounds the loader checks (min/max inclusive); its value comes from its section's file."""
    return field(metadata={"min": min, "max": max, "choices": choices})


def refuse_credentials(key: str, url: str, how: str) -> None:
    """The stages' check of a URL param: one line naming `key` and the parts of `url` that hold credentials
    (never their values), and `how` to give them instead."""
    file = FILE_OF[key.partition(".")[0]]
    try:
        secrets = url_credentials(url)
    except ValueError as err:
        raise UserError(f"{file}: {key} is not a valid URL ({err})") from None
    if secrets:  # named, never echoed: this message is printed
        shown = "`dvc params diff`, the reports and " if file == PARAMS_FILE else ""
        raise UserError(
            f"{file}: {key} holds credentials ({', '.join(secrets)}), which {shown}a pushed {file} would show; "
            f"remove them from the URL and {how}"
        )


@dataclass(frozen=True)
class DataParams:
    url: str
    member: str
    sha256: str

    def __post_init__(self) -> None:
        refuse_credentials("data.url", self.url, HOW_TO_GIVE_CREDENTIALS)


@dataclass(frozen=True)
class CleanParams:
    title_field: str
    content_field: str
    min_title_chars: int = param(min=1)
    max_title_chars: int = param(min=1)
    min_content_chars: int = param(min=1)
    max_content_chars: int = param(min=1)
    max_bad_fraction: float = param(min=0, max=1)
    rejects_per_reason: int = param(min=0)

    def __post_init__(self) -> None:
        for what in ("title", "content"):
            lo, hi = getattr(self, f"min_{what}_chars"), getattr(self, f"max_{what}_chars")
            if lo > hi:
                raise UserError(f"{PARAMS_FILE}: clean.min_{what}_chars ({lo}) is above clean.max_{what}_chars ({hi})")


# Seeds as numpy's generators take them (non-negative) and, where torch.manual_seed takes them too, at most its uint64.
TORCH_SEED_MAX = 2**64 - 1


@dataclass(frozen=True)
class SampleParams:
    size: int = param(min=1)
    seed: int = param(min=0)


@dataclass(frozen=True)
class SplitParams:
    test_size: float = param(min=0, max=0.9)
    val_size: float = param(min=0, max=0.5)
    seed: int = param(min=0)

    def __post_init__(self) -> None:
        if self.test_size == 0:
            raise UserError(f"{PARAMS_FILE}: split.test_size must be above 0: evaluate scores the test split")
        if self.test_size + self.val_size >= 1:
            raise UserError(f"{PARAMS_FILE}: split.test_size + split.val_size must be < 1, leaving rows to train on")


@dataclass(frozen=True)
class ModelParams:
    name: str
    revision: str
    sha256: str


@dataclass(frozen=True)
class TokenizeParams:
    prompt_tokens: int = param(min=8)
    response_tokens: int = param(min=8)
    seq_len: int = param(min=32)
    completion_only: bool


@dataclass(frozen=True)
class QuantParams:
    bits: int = param(choices=(4, 8, 16))
    quant_type: str = param(choices=("nf4", "fp4"))
    double_quant: bool

    def bitsandbytes_settings(self) -> dict[str, Any] | None:
        """transformers' BitsAndBytesConfig arguments for these bits, but the compute dtype (the device's):
        what modeling loads the base with and the model card's snippet shows. None: 16 bits, no quantization."""
        if self.bits == 16:
            return None
        if self.bits == 8:
            return {"load_in_8bit": True}
        return {
            "load_in_4bit": True,
            "bnb_4bit_quant_type": self.quant_type,
            "bnb_4bit_use_double_quant": self.double_quant,
        }


METHODS = ("lora", "dora", "rslora", "full")  # lora.method: the adapters PEFT adds, or every weight (full)


@dataclass(frozen=True)
class LoraParams:
    method: str = param(choices=METHODS)
    r: int = param(min=1, max=1024)
    alpha: float = param(min=0)
    dropout: float = param(min=0, max=0.9)
    target_modules: tuple[str, ...]


# The lora keys a method leaves unused. dvc.yaml tracks train's params statically (the whole lora section), so
# changing one still re-runs train; the stage says so rather than retrain in silence.
UNUSED_BY_METHOD = {"full": ("r", "alpha", "dropout", "target_modules")}


def unused_lora_keys(lora: LoraParams) -> str | None:
    """One line naming the lora keys `lora.method` ignores, for train to log; None when it uses them all."""
    unused = UNUSED_BY_METHOD.get(lora.method)
    if not unused:
        return None
    return (
        f"train: lora.method {lora.method} trains every weight, so {', '.join(f'lora.{k}' for k in unused)} are "
        "ignored; DVC still tracks them: a change to one re-runs train to the same model"
    )


def check_method_and_bits(lora: LoraParams, quant: QuantParams, source: str = PARAMS_FILE) -> None:
    """A rule across two sections: full fine-tuning updates the weights themselves, which a 4/8-bit base
    holds as frozen integer codes."""
    if lora.method == "full" and quant.bits != 16:
        raise UserError(
            f"{source}: lora.method full trains every weight in 16/32-bit and needs quant.bits 16, got quant.bits "
            f"{quant.bits}; set quant.bits: 16, or keep the {quant.bits}-bit base with lora.method lora, dora or rslora"
        )


@dataclass(frozen=True)
class TrainParams:
    epochs: float = param(min=0)
    max_steps: int = param(min=0)
    micro_batch: int = param(min=1)
    grad_accum: int = param(min=1)
    lr: float = param(min=0)
    lr_schedule: str = param(choices=("cosine", "linear", "constant"))
    warmup_ratio: float = param(min=0, max=1)
    weight_decay: float = param(min=0)
    max_grad_norm: float = param(min=0)
    grad_checkpointing: bool
    precision: str = param(choices=("auto", "bf16", "fp16", "fp32"))
    eval_every: int = param(min=1)
    processes: int = param(min=1)
    seed: int = param(min=0, max=TORCH_SEED_MAX)

    def __post_init__(self) -> None:
        if self.grad_accum % self.processes:
            raise UserError(
                f"{PARAMS_FILE}: train.grad_accum ({self.grad_accum}) must be a multiple of train.processes "
                f"({self.processes}): each process takes an equal share of every step's micro-batches"
            )


@dataclass(frozen=True)
class OpsParams:
    """How runs are operated, not what they compute: in settings.yaml, which no stage tracks, so changing
    one re-runs no stage and an interrupted training resumes the same run."""

    log_every: int = param(min=1)
    save_every: int = param(min=1)
    keep_checkpoints: int = param(min=1)
    keep_runs: int = param(min=1)
    checkpoint_mirror: str
    download_timeout_s: float = param(min=1)
    download_retries: int = param(min=0)
    mlflow: bool

    def __post_init__(self) -> None:
        if self.checkpoint_mirror not in ("", "remote") and not self.checkpoint_mirror.startswith("s3://"):
            raise UserError(
                f"{SETTINGS_FILE}: ops.checkpoint_mirror must be '', 'remote' or s3://bucket/prefix, "
                f"got {redact(self.checkpoint_mirror)!r}"
            )
        refuse_credentials(
            "ops.checkpoint_mirror",
            self.checkpoint_mirror,
            "give them as AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use 'remote' (the DVC remote's, from "
            ".dvc/config.local)",
        )


@dataclass(frozen=True)
class EvalParams:
    max_samples: int = param(min=1)
    batch_size: int = param(min=1)
    max_new_tokens: int = param(min=1)
    do_sample: bool
    temperature: float = param(min=0.01)
    top_p: float = param(min=0.01, max=1)
    repetition_penalty: float = param(min=0.5)
    report_samples: int = param(min=0)
    seed: int = param(min=0, max=TORCH_SEED_MAX)


GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")  # what llama.cpp's Python converter writes


@dataclass(frozen=True)
class ExportParams:
    """What the export (stages/export.py, outside DVC) writes: in settings.yaml, as no stage reads it."""

    dtype: str = param(choices=("auto", "bf16", "fp16", "fp32"))
    gguf_types: tuple[str, ...]

    def __post_init__(self) -> None:
        unknown = [t for t in self.gguf_types if t not in GGUF_TYPES]
        if unknown:
            raise UserError(f"{SETTINGS_FILE}: export.gguf_types {unknown}: must be among {', '.join(GGUF_TYPES)}")


SECTIONS: dict[str, type] = {
    "data": DataParams,
    "clean": CleanParams,
    "sample": SampleParams,
    "split": SplitParams,
    "model": ModelParams,
    "tokenize": TokenizeParams,
    "quant": QuantParams,
    "lora": LoraParams,
    "train": TrainParams,
    "eval": EvalParams,
    "export": ExportParams,
    "ops": OpsParams,
}
# Which file holds each section: the one place that says so. DVC 3 lists every key of params.yaml as an
# experiment column (`dvc exp show`, `dvc params diff`), with no setting to hide some, so what re-runs no
# stage lives in a file of its own, which `dvc exp run -S settings.yaml:ops.log_every=1` sets all the same.
FILE_OF = {section: SETTINGS_FILE if section in ("export", "ops") else PARAMS_FILE for section in SECTIONS}
PARAM_FILES = tuple(dict.fromkeys(FILE_OF.values()))  # params.yaml, settings.yaml
# Keys that moved to the untracked `ops` section: say where, since did-you-mean cannot.
MOVED = {
    "data.timeout_s": "ops.download_timeout_s",
    "data.retries": "ops.download_retries",
    **{f"train.{k}": f"ops.{k}" for k in ("log_every", "save_every", "keep_checkpoints")},
}


def missing_hint(file: str) -> str:
    """A key its file lacks has no value anywhere else: the committed file holds each default and its meaning."""
    return f"{file} sets every key: take it, with its meaning, from `git show HEAD:{file}`"


T = TypeVar("T")
SECTION_OF = {cls: name for name, cls in SECTIONS.items()}

# What this process read of each params file: sections are compared again before outputs are written.
_READ: dict[tuple[Path, str], Any] = {}


# DVC's own message names the repeated key; the values it also quotes are left out (data.url may be one).
_DUPLICATE_KEY = re.compile(r'duplicate key "(.*?)" with value')


def parse_yaml(text: str, source: str) -> Any:
    """YAML read exactly as DVC reads params.yaml (`dvc.utils.serialize.parse_yaml`: ruamel.yaml,
    `typ="safe"`, YAML 1.2), so a stage computes with the values dvc.lock and `dvc params diff` show:
    `0100` is 100, not PyYAML's octal 64; `yes` and `on` are strings. A repeated key is refused, as DVC
    refuses it. Every YAML file of the pipeline (params.yaml, profiles) is read here."""
    try:
        return YAML(typ="safe").load(text)
    except DuplicateKeyError as err:
        key = _DUPLICATE_KEY.search(err.problem or "")
        what = f"duplicate key '{key.group(1)}'" if key else "duplicate key"
        raise UserError(f"{source}: line {err.problem_mark.line + 1}: {what}: keep one of them") from None
    except YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None)
        raise UserError(f"{source}:{where} is not valid YAML" + (f" ({problem})" if problem else "")) from None
    except RecursionError:  # ruamel.yaml recurses once per level: `[[[[...` thousands deep exhausts the stack
        raise UserError(
            f"{source}:{_deepest_nesting(text)} is nested too deeply to read (lists or mappings inside each other "
            "hundreds of levels deep); no param takes more than a list of names"
        ) from None


def _deepest_nesting(text: str) -> str:
    """' line N (section.key)': the line of `text` that opens the most `[` and `{`, with the key it sets,
    for a message ('' for one line, like a --set value)."""
    lines = text.splitlines()
    if len(lines) < 2:
        return ""
    number = max(range(len(lines)), key=lambda i: lines[i].count("[") + lines[i].count("{"))
    keys: list[tuple[int, str]] = []  # (indent, key) of the mappings enclosing that line
    for line in lines[: number + 1]:
        if match := re.match(r"( *)([^\s#:\[\]{}][^#:]*):(\s|$)", line):
            indent = len(match[1])
            keys = [(i, k) for i, k in keys if i < indent] + [(indent, match[2].strip())]
    key = ".".join(k for _, k in keys)
    return f" line {number + 1}" + (f" ({key})" if key else "")


def read_params_file(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: not found; run from the repository root, where {' and '.join(PARAM_FILES)} live")
    try:
        text = path.read_text(encoding="utf-8")  # as DVC opens it
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    data = parse_yaml(text, str(path)) or {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of sections (data, clean, ...), got {type(data).__name__}")
    return data


def check_sections_at_home(data: dict[str, Any], path: Path) -> None:
    """Refuse the sections in `path` (read as `data`) that another file holds, naming their keys and that file:
    a params.yaml from before settings.yaml still holds `ops` and `export`, which no stage would read there."""
    strays = [section for section in data if section in FILE_OF and FILE_OF[section] != path.name]
    if strays:
        keys = [f"{s}.{k}" for s in strays for k in (data[s] if isinstance(data[s], dict) else {})] or strays
        homes = " and ".join(dict.fromkeys(FILE_OF[s] for s in strays))
        why = " (no stage tracks it: they re-run nothing, and `dvc exp show` leaves them out)"
        raise UserError(
            f"{path}: {', '.join(keys)} belong in {homes} now{why if homes == SETTINGS_FILE else ''}: move any "
            f"value you changed there and delete them from {path.name}"
        )


def load_params(cls: type[T], root: str | Path = ".") -> T:
    """Read `cls`'s section from its file under `root` (e.g. `load_params(LoraParams)` reads params.yaml's
    lora), validating every key."""
    section = SECTION_OF[cls]
    path = Path(root, FILE_OF[section])
    data = read_params_file(path)
    for other in (Path(root, name) for name in PARAM_FILES):  # a section left in the wrong file is never read
        if other == path or other.is_file():
            check_sections_at_home(data if other == path else read_params_file(other), other)
    raw = data.get(section)
    if raw is None:
        raise UserError(f"{path}: no '{section}' section ({missing_hint(path.name)})")
    if cls is not OpsParams:  # how a run is operated: an edit mid-run changes no output, so it stops none
        _READ.setdefault((path.resolve(), section), copy.deepcopy(raw))
    return parse_section(cls, raw, source=str(path))


# DVC rewrites params.yaml in place (`dvc exp run -S`): a read in the middle finds whole sections missing. A
# change is read again this much later, when the file has settled, so the error names the keys that changed.
SETTLE_SECONDS = 0.5


def check_params_unchanged() -> None:
    """Fail if a section this process loaded has changed in its file since (`ops` aside: no output depends
    on how a run is operated).

    DVC records a stage's outputs with the params it finds *after* the stage ran: outputs computed
    with other values (a second `dvc exp run` rewrote params.yaml meanwhile) would be misattributed.
    """
    changes = _changed_keys()
    if changes:
        time.sleep(SETTLE_SECONDS)
        changes = _changed_keys()
    if changes:
        files: dict[str, list[str]] = {}
        for name, key in changes:
            files.setdefault(name, []).append(key)
        where = "; ".join(f"{name}: {', '.join(keys)}" for name, keys in files.items())
        raise UserError(
            f"{where} changed while this stage ran, "
            "so its outputs were not written (they would be recorded with the new values); run experiments one at "
            "a time: `dvc exp run --queue -S ...`, then `dvc queue start`"
        )


def _changed_keys() -> list[tuple[str, str]]:
    """(file name, `section.key`) for each key of a loaded section whose value in its file is not what was loaded."""
    changes = []
    for (path, section), before in _READ.items():
        try:
            now = read_params_file(path).get(section)
        except UserError:
            now = None
        if now != before:
            was, is_ = (v if isinstance(v, dict) else {} for v in (before, now))
            changed = sorted(str(k) for k in was.keys() | is_.keys() if was.get(k) != is_.get(k))
            changes += [(path.name, f"{section}.{k}") for k in changed] or [(path.name, section)]
    return changes


def parse_section(cls: type[T], raw: Any, source: str | None = None) -> T:
    """`raw` (one section's mapping) as a `cls`; every problem of the section is in the one error, which
    starts with `source` (default: the section's file)."""
    section = SECTION_OF[cls]
    file = FILE_OF[section]
    source = source or file
    if not isinstance(raw, dict):
        raise UserError(f"{source}: '{section}' must be a mapping of keys, got {_describe(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    problems, values = [], {}
    for key, value in raw.items():
        name = f"{section}.{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"did you mean '{section}.{close[0]}'?" if close else f"known keys: {', '.join(fields)}"
            problems.append(_moved(name) if name in MOVED else f"unknown key '{name}'; {hint}")
            continue
        try:
            values[key] = _check(name, value, hints[key], fields[key].metadata)
        except ValueError as err:
            problems.append(str(err))
    missing = [f"'{section}.{key}'" for key in fields if key not in raw]
    if missing:
        hint = f" ({missing_hint(file)})" if file in source else ""
        problems.append(f"missing {', '.join(missing)}{hint}")
    if not problems:
        try:
            return cls(**values)
        except UserError as err:  # a rule across keys (__post_init__), checked once each key is valid
            problems.append(str(err).removeprefix(f"{file}: "))
    head = f"{source}: " if len(problems) == 1 else f"{source}: {len(problems)} problems in '{section}': "
    raise UserError(head + "; ".join(problems))


def _moved(name: str) -> str:
    """Where a key that moved lives now: its new name, and its file when that is another."""
    new = MOVED[name]
    old_file, new_file = (FILE_OF[key.partition(".")[0]] for key in (name, new))
    return f"'{name}' is now '{new}'" + (f" in {new_file}" if new_file != old_file else "") + " (re-runs nothing)"


def _check(key: str, value: Any, hint: Any, meta: Any) -> Any:
    """`value` as the field's type, or ValueError saying what was expected."""
    where = f"'{key}'"
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"{where} must be a list of names, got {_describe(value)}")
        if not value:
            raise ValueError(f"{where} must name at least one entry")
        return tuple(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be an integer, got {_describe(value)}")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{where} must be a number, got {_describe(value)}")
        value = float(value)
    elif hint is str:
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {_describe(value)}")
    elif isinstance(hint, types.UnionType):  # pragma: no cover - no such fields yet
        raise TypeError(f"unsupported type for {key}: {hint}")
    lo, hi, choices = meta.get("min"), meta.get("max"), meta.get("choices")
    if choices and value not in choices:
        raise ValueError(f"{where} must be one of {', '.join(map(str, choices))}; got {value!r}")
    if lo is not None and value < lo:
        raise ValueError(f"{where} must be >= {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise ValueError(f"{where} must be <= {hi}, got {value!r}")
    return value


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    shown = repr(value)
    return f"{shown if len(shown) <= 120 else shown[:120] + '…'} ({type(value).__name__})"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"lora": LoraParams(r=8, ...)} or {"lora": {"r": 8}} -> {"lora.r": 8, ...}: DVC's dotted keys, for
    MLflow and the results page alike. A list becomes one comma-separated string."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value
    return flat
