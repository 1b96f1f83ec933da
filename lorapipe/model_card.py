"""The Hugging Face model card (README.md) of a published adapter or merged model."""

from __future__ import annotations

from typing import Any

import yaml

from lorapipe.prompt import INSTRUCTION, PLAIN_TEMPLATE

SYNTHETIC_MARK = "data/synthetic/"


def _outs(lock: dict, stage: str) -> list[dict]:
    return lock.get("stages", {}).get(stage, {}).get("outs", [])


def data_versions(lock: dict) -> list[tuple[str, str]]:
    """(path, DVC md5) of the raw download and the train/test split, from dvc.lock."""
    return [(out["path"], out.get("md5", "?")) for stage in ("download", "split") for out in _outs(lock, stage)]


def scores_table(scores: dict) -> str:
    rows = ["| metric | base | tuned | delta |", "|---|---:|---:|---:|"]
    for name, base in scores.get("base", {}).items():
        tuned, delta = scores["tuned"][name], scores["delta"][name]
        rows.append(f"| {name} | {base:.4f} | {tuned:.4f} | {delta:+.4f} |")
    return "\n".join(rows)


def _section(params: dict, name: str) -> str:
    return yaml.safe_dump({name: params.get(name, {})}, sort_keys=False).strip()


def model_card(
    *,
    repo_id: str,
    merged: bool,
    params: dict[str, Any],
    lock: dict,
    scores: dict,
    base_model: dict,
    commit: str,
    license: str,
) -> str:
    """Markdown with Hub metadata: what was trained, on which data version, how well, how to use it."""
    base_name = str(params.get("model", {}).get("name", "unknown"))
    data_url = str(params.get("data", {}).get("url", ""))
    synthetic = SYNTHETIC_MARK in data_url
    hub_base = base_name if base_model.get("kind") == "hub" else None  # else a local file: no Hub link
    meta = {
        "license": license,
        "library_name": "transformers" if merged else "peft",
        "pipeline_tag": "text-generation",
        "tags": ["lorapipe", "qlora", "lora", "product-descriptions", "e-commerce"],
        **({"base_model": hub_base} if hub_base else {}),
    }
    base_version = ", ".join(f"{k} `{base_model[k]}`" for k in ("revision", "sha256") if base_model.get(k)) or "local"
    what = "model (LoRA adapter merged into the base)" if merged else "LoRA adapter"
    versions = "\n".join(f"- `{path}`: DVC md5 `{md5}`" for path, md5 in data_versions(lock)) or "- (no dvc.lock)"
    if merged:
        usage = (
            "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")'
        )
    else:
        usage = (
            "from peft import AutoPeftModelForCausalLM\nfrom transformers import AutoTokenizer\n\n"
            f'model = AutoPeftModelForCausalLM.from_pretrained("{repo_id}")\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")'
        )
    synthetic_note = (
        "\n> **Demo model.** It was trained on the small SYNTHETIC sample shipped with lorapipe, not on "
        "real Amazon data: it shows the pipeline works, it is not useful for real descriptions.\n"
        if synthetic
        else ""
    )
    return f"""---
{yaml.safe_dump(meta, sort_keys=False).strip()}
---

# {repo_id.split("/")[-1]}

A {what} for `{base_name}` that writes an e-commerce product description from a product title.
Trained with lorapipe (a DVC pipeline for QLoRA fine-tuning) at commit `{commit}`.
{synthetic_note}
## Results

Greedy decoding on {scores.get("samples", "?")} held-out test titles, base model vs this model
(BLEU 0-100, ROUGE F1 0-1, perplexity of the reference descriptions: lower is better).

{scores_table(scores)}

## Training data

AmazonTitles-1.3MM product titles and descriptions (`{data_url}`), cleaned, deduplicated and
sampled by the pipeline. Data version:

{versions}

## Training

Base model `{base_name}` ({base_version}).

```yaml
{_section(params, "quant")}
{_section(params, "lora")}
{_section(params, "train")}
```

## How to use

```python
{usage}
```

The model was trained on this prompt: the tokenizer's chat template with the system message
"{INSTRUCTION}" and the title as the user message, or, for a base without a chat template:

```
{PLAIN_TEMPLATE.format(instruction=INSTRUCTION, title="<product title>")}
```

## Intended use and limits

For drafting product descriptions from titles, reviewed by a person before use. The model
invents details the title does not state (materials, sizes, features) and repeats the style and
the biases of Amazon listings; it is not a source of facts about a product. English only.

## License

`{license}`, as the base model `{base_name}`; its terms apply to this {what.split(" (")[0]}.
"""
