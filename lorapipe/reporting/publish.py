"""Upload the adapter or fully tuned model (or the merged model, and its GGUF files) to the Hugging Face Hub.

    python -m lorapipe.reporting.publish you/tinyllama-product-descriptions --dry-run
    HF_TOKEN=hf_... python -m lorapipe.reporting.publish you/tinyllama-product-descriptions \
        [--merged] [--gguf] [--private]

Everything to upload is first put together in one folder (`--out`, default models/publish): the
weights and tokenizer, the adapter's `adapter_config.json` pointing at the base's Hub id and
revision (not the local models/base), the GGUF files and Modelfile with `--gguf`, and the card
as README.md. `--dry-run` stops there and prints the card; that folder is what the Hub repo will
hold, so `from_pretrained("<out>")` tries it as a user would. The card is built from params.yaml,
metrics/ and the adapter's own train_params.json, so it describes exactly what was trained.
The token comes from HF_TOKEN only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
from pathlib import Path

from lorapipe.core.artifacts import BASE_MODEL_JSON, DOWNLOAD_JSON, EVAL_DETAILS, EXPORT_COMMAND, GGUF, MERGED, TRAINED
from lorapipe.core.cli import UserError, log, run_cli
from lorapipe.core.outputs import atomic_dir, json_object
from lorapipe.core.params import PARAMS_FILE, EvalParams, parse_section, parse_yaml, read_params_file
from lorapipe.core.vcs import file_at, git_commit
from lorapipe.data.prompt import build_prompt
from lorapipe.eval.eval_files import read_eval_run
from lorapipe.model.decoding import decoding_record
from lorapipe.reporting.model_card import EXAMPLE_TITLE, BaseModel, BaseOrigin, CardFacts, model_card
from lorapipe.reporting.summary import read_result
from lorapipe.train.training_record import TrainingRecord, load_training_record, training_record_from

REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
# PEFT's generic README gives way to our card; the rest is the model.
PRIVATE_FILES = {"README.md"}
EXPORT_HINT = f"run the export first ({EXPORT_COMMAND})"


def read_json(path: Path, hint: str) -> dict:
    """A JSON object the pipeline wrote (metrics/base_model.json, download.json), read as JSON, not as YAML
    1.1 (which reads `5e-05` as a string); else one error line naming the file."""
    if not path.is_file():
        raise UserError(f"{path}: not found; {hint}")
    return json_object(path.read_bytes(), path)


def model_files(folder: Path, hint: str) -> list[Path]:
    files = sorted(p for p in folder.glob("*") if p.is_file() and p.name not in PRIVATE_FILES)
    if not any(p.suffix == ".safetensors" for p in files):
        raise UserError(f"{folder}: no *.safetensors weights; {hint}")
    return files


def gguf_files(folder: Path) -> list[Path]:
    """The GGUF files, smallest first, then the Modelfile."""
    found = sorted(folder.glob("*.gguf"), key=lambda f: f.stat().st_size)
    if not found or not (folder / "Modelfile").is_file():
        raise UserError(f"{folder}: no GGUF files and Modelfile; {EXPORT_HINT}")
    return [*found, folder / "Modelfile"]


def base_reference(option: str | None, origin: BaseOrigin) -> BaseModel | None:
    """The base on the Hub: `--base-model id[@revision]`, else the hub model the pipeline downloaded."""
    if option:
        hub_id, _, revision = option.partition("@")
        if not REPO_ID.match(hub_id):
            raise UserError(f"--base-model {option!r}: expected owner/name or owner/name@revision")
        return BaseModel(hub_id, revision)
    if origin.kind == "hub":
        return BaseModel(origin.name, origin.revision)
    return None


def trained_at(trained: TrainingRecord, experiment: str | None) -> str:
    """Markdown naming where the adapter was trained: HEAD when HEAD's params.yaml holds the adapter's own
    settings; else the experiment (or an uncommitted run) on top of HEAD, which a commit would mislead."""
    commit = git_commit()
    if not commit:
        return "outside a git checkout"
    committed = file_at(commit, PARAMS_FILE)
    try:
        same = (
            committed is not None and training_record_from(parse_yaml(committed.decode(), PARAMS_FILE) or {}) == trained
        )
    except (UserError, UnicodeDecodeError, AttributeError):
        same = False  # HEAD's params.yaml is not a valid run: it is not what was trained
    if same:
        return f"at commit `{commit}`"
    what = f"in the DVC experiment `{experiment}`" if experiment else "from uncommitted params"
    return (
        f"{what}, on top of commit `{commit}` whose {PARAMS_FILE} is not the one trained with (the params were "
        "not committed)"
    )


def place(source: Path, target: Path) -> None:
    """A hard link where the filesystem allows (GGUF and merged weights are gigabytes), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def stage_upload(out: Path, files: list[Path], card: str, base: BaseModel | None) -> None:
    """Write the repo's files into `out`: the adapter config names the base on the Hub."""
    with atomic_dir(out) as tmp:
        for f in files:
            if f.name == "adapter_config.json" and base:
                config = json.loads(f.read_text())
                config.update(base_model_name_or_path=base.hub_id, revision=base.revision or None)
                (tmp / f.name).write_text(json.dumps(config, indent=2) + "\n")
            else:
                place(f, tmp / f.name)
        (tmp / "README.md").write_text(card)


def upload(repo_id: str, folder: Path, private: bool, token: str) -> str:
    """One commit holding the folder; returns the commit's URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="Upload from lorapipe")
    return info.commit_url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo_id", help="Hub repo to create or update, as owner/name")
    parser.add_argument("--merged", action="store_true", help=f"upload {MERGED} ({EXPORT_COMMAND})")
    parser.add_argument("--gguf", action="store_true", help=f"also upload {GGUF} (GGUF files, Modelfile)")
    parser.add_argument("--base-model", help="Hub id[@revision] of the base when models/base came from a local file")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--dry-run", action="store_true", help="put the files together, print the card; no network")
    parser.add_argument("--license", default="apache-2.0", help="license id of the base model (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("models/publish"), help="folder of the repo's files")
    args = parser.parse_args()
    if not REPO_ID.match(args.repo_id):
        raise UserError(f"repo id {args.repo_id!r}: expected owner/name, e.g. you/tinyllama-product-descriptions")
    # An upload's own settings are checked before the card is built and the files staged (a merged model's
    # are gigabytes): a missing token is said at once.
    token = os.environ.get("HF_TOKEN", "")
    if not args.dry_run:
        if not token:
            raise UserError("HF_TOKEN is not set: create a write token at https://huggingface.co/settings/tokens")
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
            raise UserError("HF_HUB_OFFLINE is set (make sets it for the offline demo): unset it to publish")

    folder = MERGED if args.merged else TRAINED
    files = model_files(folder, EXPORT_HINT if args.merged else "run the pipeline first (dvc repro)")
    if args.gguf:
        files += gguf_files(GGUF)
    params = read_params_file()
    trained = load_training_record(TRAINED)
    self_contained = args.merged or trained.lora.method == "full"  # a fully tuned model needs no base to load
    origin = BaseOrigin.from_record(read_json(BASE_MODEL_JSON, "run the pipeline first (dvc repro)"))
    base = base_reference(args.base_model, origin)
    if base is None and not self_contained:
        raise UserError(
            f"models/base came from a local file ({origin.label}), which no one else can load: pass "
            "--base-model owner/name[@revision] naming the Hub copy of exactly those weights, or publish "
            "--merged (self-contained)"
        )
    from lorapipe.model.modeling import load_tokenizer  # torch: only when a card is built

    tokenizer = load_tokenizer(folder)
    card = model_card(
        CardFacts(
            repo_id=args.repo_id,
            merged=self_contained,
            base=base,
            origin=origin,
            params=params,
            trained=trained,
            decoding=decoding_record(parse_section(EvalParams, params.get("eval", {}))),
            chat_template=bool(tokenizer.chat_template),
            prompt_example=build_prompt(tokenizer, EXAMPLE_TITLE),
            download=read_json(DOWNLOAD_JSON, "run the pipeline first (dvc repro)"),
            scores=read_result(EVAL_DETAILS),
            trained_at=trained_at(trained, read_eval_run().get("experiment")),
            license=args.license,
            gguf_files=[f.name for f in files if f.suffix == ".gguf"],
        )
    )
    stage_upload(args.out, files, card, base)
    listing = "\n".join(f"  {f.stat().st_size / 2**20:9.1f} MiB  {f.name}" for f in sorted(args.out.iterdir()))
    total = sum(f.stat().st_size for f in args.out.iterdir())
    print(card)
    print(f"{args.repo_id}: {len(files) + 1} files, {total / 2**20:.1f} MiB, in {args.out}\n{listing}")
    if args.dry_run:
        log.info(f"dry run: nothing uploaded; the repo's files are in {args.out}")
        return

    try:
        url = upload(args.repo_id, args.out, args.private, token)
    except Exception as err:  # the hub client raises many kinds; all end in one clean line
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"upload to {args.repo_id} failed: {reason.replace(token, '***')}") from None
    print(f"uploaded: {url}")


if __name__ == "__main__":
    run_cli(main)
