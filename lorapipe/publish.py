"""Upload the adapter (or the merged model) to a Hugging Face Hub repo, with a generated model card.

    python -m lorapipe.publish you/tinyllama-product-descriptions --dry-run
    HF_TOKEN=hf_... python -m lorapipe.publish you/tinyllama-product-descriptions [--merged] [--private]

The token comes from HF_TOKEN only. `--dry-run` writes the card and lists the files without
touching the network. The card is built from params.yaml, dvc.lock (the data's DVC version),
metrics/eval.json and metrics/base_model.json, so it describes exactly what was trained.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import yaml

from lorapipe.model_card import model_card
from lorapipe.outputs import atomic_path
from lorapipe.stage import StageError, log, run_stage
from lorapipe.tracking import git_commit

REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
# PEFT's generic README gives way to our card; the rest is the model.
PRIVATE_FILES = {"README.md"}


def read_yaml(path: Path, hint: str) -> dict:
    if not path.is_file():
        raise StageError(f"{path}: not found; {hint}")
    return yaml.safe_load(path.read_text()) or {}


def model_files(folder: Path, hint: str) -> list[Path]:
    files = sorted(p for p in folder.glob("*") if p.is_file() and p.name not in PRIVATE_FILES)
    if not any(p.suffix == ".safetensors" for p in files):
        raise StageError(f"{folder}: no *.safetensors weights; {hint}")
    return files


def upload(repo_id: str, files: list[Path], card: str, private: bool, token: str) -> str:
    """One commit holding the model files and the card; returns the commit's URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    operations = [CommitOperationAdd(path_in_repo=f.name, path_or_fileobj=str(f)) for f in files]
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode()))
    info = api.create_commit(repo_id, operations=operations, commit_message="Upload from lorapipe")
    return info.commit_url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo_id", help="Hub repo to create or update, as owner/name")
    parser.add_argument("--merged", action="store_true", help="upload models/merged (dvc repro export/dvc.yaml)")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--dry-run", action="store_true", help="write the card, list the files; no network")
    parser.add_argument("--license", default="apache-2.0", help="license id of the base model (default: %(default)s)")
    parser.add_argument("--card", type=Path, default=Path("models/model_card.md"), help="where to write the card")
    args = parser.parse_args()
    if not REPO_ID.match(args.repo_id):
        raise StageError(f"repo id {args.repo_id!r}: expected owner/name, e.g. you/tinyllama-product-descriptions")

    if args.merged:
        folder, hint = Path("models/merged"), "run the export stage first (dvc repro export/dvc.yaml)"
    else:
        folder, hint = Path("models/adapter"), "run the pipeline first (dvc repro)"
    files = model_files(folder, hint)
    card = model_card(
        repo_id=args.repo_id,
        merged=args.merged,
        params=read_yaml(Path("params.yaml"), "run from the repository root"),
        lock=read_yaml(Path("dvc.lock"), "run the pipeline first (dvc repro)"),
        scores=read_yaml(Path("metrics/eval.json"), "run the evaluate stage first (dvc repro)"),
        base_model=read_yaml(Path("metrics/base_model.json"), "run the pipeline first (dvc repro)"),
        commit=git_commit() or "unknown",
        license=args.license,
    )
    with atomic_path(args.card) as tmp:
        tmp.write_text(card)
    total = sum(f.stat().st_size for f in files)
    listing = "\n".join(f"  {f.stat().st_size / 2**20:9.1f} MiB  {f}" for f in files)
    print(f"{args.repo_id}: {len(files) + 1} files, {total / 2**20:.1f} MiB\n  README.md <- {args.card}\n{listing}")
    if args.dry_run:
        log.info("dry run: nothing uploaded")
        return

    token = os.environ.get("HF_TOKEN", "")
    if not token:
        raise StageError("HF_TOKEN is not set: create a write token at https://huggingface.co/settings/tokens")
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise StageError("HF_HUB_OFFLINE is set (make sets it for the offline demo): unset it to publish")
    try:
        url = upload(args.repo_id, files, card, args.private, token)
    except Exception as err:  # the hub client raises many kinds; all end in one clean line
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise StageError(f"upload to {args.repo_id} failed: {reason.replace(token, '***')}") from None
    print(f"uploaded: {url}")


if __name__ == "__main__":
    run_stage(main)
