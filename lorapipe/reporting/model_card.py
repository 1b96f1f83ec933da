"""The Hugging Face model card (README.md) of a published adapter or merged model, with its GGUF files."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import yaml

from lorapipe.core.params import QuantParams
from lorapipe.data.prompt import INSTRUCTION, PLAIN_TEMPLATE
from lorapipe.model.decoding import llama_cpp_settings
from lorapipe.reporting.compare import HEADLINE, METRICS
from lorapipe.reporting.scores_table import markdown_table, score_rows
from lorapipe.train.training_record import METHOD_NAMES, TrainingRecord, what_is_trained

SYNTHETIC_MARK = "data/synthetic/"
EXAMPLE_TITLE = "Stainless Steel Travel Mug, 16 oz"
DATASET_TERMS = (
    "AmazonTitles-1.3MM is the raw-text dump of LF-Amazon-1.3M from the Extreme Classification Repository "
    "(Bhatia et al., 2016, http://manikvarma.org/downloads/XC/XMLRepository.html), processed from Amazon "
    "product data (McAuley et al.). No open licence is stated for it: it is distributed for research, and "
    "its users are asked to cite the repository and the original source. The titles and descriptions are "
    "Amazon's and its sellers' text. Check those terms before any use beyond research; this model's licence "
    "covers its weights, not the training data."
)


# eval_details.json's headline scores as the Hub's model-index metric types (https://hf.co/metrics).
HUB_METRIC_TYPES = {"bleu": "bleu", "rougeL": "rouge", "perplexity": "perplexity"}


@dataclass(frozen=True)
class BaseModel:
    """The base the adapter loads: a Hub id and the commit it was trained on (empty: not pinned)."""

    hub_id: str
    revision: str = ""


@dataclass(frozen=True)
class BaseOrigin:
    """Where models/base came from, as the base_model stage resolved it (metrics/base_model.json): the
    card's one source of the base's provenance, not today's params.yaml."""

    kind: str  # hub, gguf or folder (stages/base_model.py)
    name: str  # model.name: a Hub id, or a local path of which only the file name is shown
    revision: str = ""  # the Hub commit (hub)
    sha256: str = ""  # the file's checksum (gguf)

    @classmethod
    def from_record(cls, record: dict) -> BaseOrigin:
        fields = ("kind", "name", "revision", "sha256")
        return cls(**{key: str(record.get(key) or "") for key in fields})

    @property
    def label(self) -> str:
        """The Hub id, or the local file or folder's name (no path of this machine)."""
        return self.name if self.kind == "hub" else PurePath(self.name).name

    def sentence(self) -> str:
        """Markdown: where the weights came from."""
        if self.kind == "hub":
            pinned = f" at revision `{self.revision}`" if self.revision else ""
            return f"`{self.name}` from the Hugging Face Hub{pinned}"
        if self.kind == "gguf":
            return (
                f"the local GGUF file `{self.label}` (sha256 `{self.sha256 or '?'}`), dequantized to safetensors "
                "by the pipeline; not downloaded from the Hugging Face Hub"
            )
        return f"the local model folder `{self.label}`; not downloaded from the Hugging Face Hub"


@dataclass(frozen=True)
class CardFacts:
    """Everything the card states, read from the run's own files by `lorapipe.reporting.publish`."""

    repo_id: str
    merged: bool  # a self-contained model (merged, or fully tuned): no peft, no base to load
    base: BaseModel | None  # None: a local base nobody else can load (merged uploads only)
    origin: BaseOrigin  # where the trained-on base came from
    params: dict[str, Any]
    trained: TrainingRecord  # what was trained (the adapter's train_params.json), not today's params.yaml
    decoding: dict[str, Any]  # the decoding record (lorapipe.model.decoding.decoding_record) evaluate used
    chat_template: bool  # the tokenizer has one; else PLAIN_TEMPLATE
    prompt_example: str  # the exact prompt of EXAMPLE_TITLE
    download: dict  # metrics/download.json: the raw file's sha256
    scores: dict  # metrics/eval_details.json
    trained_at: str  # markdown: the commit, or the experiment whose params were not committed
    license: str
    gguf_files: list[str] = field(default_factory=list)  # smallest first: the one the examples use


def _section(trained: TrainingRecord, name: str) -> str:
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(getattr(trained, name)).items()}
    return yaml.safe_dump({name: values}, sort_keys=False).strip()


def _quantization(quant: QuantParams) -> str:
    """The BitsAndBytesConfig training loaded the base with (QuantParams.bitsandbytes_settings; the compute
    dtype is left at its default, fp32, as the snippet runs), as Python."""
    settings = [
        f"{name}={json.dumps(value) if isinstance(value, str) else repr(value)}"
        for name, value in (quant.bitsandbytes_settings() or {}).items()
    ]
    if len(settings) == 1:
        return f"BitsAndBytesConfig({settings[0]})"
    return f"BitsAndBytesConfig(\n        {', '.join(settings)},\n    )"


def _describe_function(facts: CardFacts) -> str:
    """`describe(title)`: the prompt and the decoding record of the evaluate stage."""
    if facts.chat_template:
        prompt = (
            f'    messages = [\n        {{"role": "system", "content": "{INSTRUCTION}"}},\n'
            '        {"role": "user", "content": title},\n    ]\n'
            "    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)\n"
        )
    else:
        template = PLAIN_TEMPLATE.format(instruction=INSTRUCTION, title="{title}")
        prompt = f"    prompt = tokenizer.bos_token + {template!r}.format(title=title)\n"
    settings = ", ".join(f"{name}={value!r}" for name, value in facts.decoding.items())
    return (
        "def describe(title: str) -> str:\n"
        f"{prompt}"
        '    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")\n'
        f"    out = model.generate(\n        **ids, {settings},\n"
        "        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,\n    )\n"
        '    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()\n'
    )


def usage(facts: CardFacts) -> str:
    """Python that reproduces the evaluate stage's outputs (on the CPU, in fp32, as evaluate runs there)."""
    repo = facts.repo_id
    if facts.merged:
        load = (
            "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f'model = AutoModelForCausalLM.from_pretrained("{repo}", dtype=torch.float32).eval()\n'
        )
    else:
        base = facts.base
        revision = f', revision="{base.revision}"' if base.revision else ""
        if facts.trained.quant.bits == 16:
            load_base = f'AutoModelForCausalLM.from_pretrained("{base.hub_id}"{revision}, dtype=torch.float32)'
        else:
            load_base = (
                f'AutoModelForCausalLM.from_pretrained(\n    "{base.hub_id}"{revision}, dtype=torch.float32,\n'
                f"    quantization_config={_quantization(facts.trained.quant)},\n).dequantize()"
            )
        quantized = ", BitsAndBytesConfig" if facts.trained.quant.bits < 16 else ""
        load = (
            "from peft import PeftModel\n"
            f"from transformers import AutoModelForCausalLM, AutoTokenizer{quantized}\n\n"
            f"# The adapter learned on the {facts.trained.quant.bits}-bit base: load the base as training did"
            + (", dequantize it" if facts.trained.quant.bits < 16 else "")
            + ",\n# then merge. (Into the plain base instead, every output shifts: lorapipe's demo lost a\n"
            "# quarter of its ROUGE-L that way.)\n"
            f"base = {load_base}\n"
            f'model = PeftModel.from_pretrained(base, "{repo}").merge_and_unload().eval()\n'
        )
    return (
        f"import torch\n{load}"
        f'tokenizer = AutoTokenizer.from_pretrained("{repo}")\n\n\n'
        f"{_describe_function(facts)}\n\n"
        f'print(describe("{EXAMPLE_TITLE}"))'
    )


def decoding_name(decoding: dict[str, Any]) -> str:
    return "sampling" if decoding.get("do_sample") else "greedy decoding"


def gguf_section(facts: CardFacts) -> str:
    if not facts.gguf_files:
        return ""
    files, compact = ", ".join(f"`{name}`" for name in facts.gguf_files), facts.gguf_files[0]
    flags = " ".join(f"{flag} {value}" for _, flag, value in llama_cpp_settings(facts.decoding))
    decoding = decoding_name(facts.decoding)
    return f"""
## Run it with llama.cpp or Ollama (GGUF)

{files}: the merged model converted by llama.cpp's `convert_hf_to_gguf.py`, with the tokenizer and
its chat template. The `Modelfile` sets Ollama's template to the exact training prompt and {decoding}:

```bash
hf download {facts.repo_id} {compact} Modelfile --local-dir product-descriptions
cd product-descriptions && ollama create product-descriptions -f Modelfile
ollama run product-descriptions "{EXAMPLE_TITLE}"
```

With llama.cpp, save the whole prompt (below, with your title) as `prompt.txt` and decode as evaluate did:

```bash
llama-completion -m {compact} -f prompt.txt \\
    {flags}
```
"""


def requirements(facts: CardFacts) -> str:
    """What the usage snippet imports: a merged model needs neither peft nor bitsandbytes."""
    packages = ["torch", "transformers"]
    if not facts.merged:
        packages += ["peft", *(["bitsandbytes"] if facts.trained.quant.bits < 16 else [])]
    return " ".join(packages)


def model_index(facts: CardFacts, data_name: str, synthetic: bool) -> list[dict]:
    """The Hub's evaluation-results metadata: the tuned model's headline scores of eval_details.json."""
    tuned = facts.scores.get("tuned") or {}
    metrics = [
        {"type": HUB_METRIC_TYPES[name], "name": METRICS[name].label, "value": tuned[name]}
        for name in HEADLINE
        if name in tuned
    ]
    dataset = {"type": "lorapipe-synthetic" if synthetic else "AmazonTitles-1.3MM", "name": data_name, "split": "test"}
    task = {"type": "text-generation", "name": "Product description generation"}
    return [{"name": facts.repo_id.split("/")[-1], "results": [{"task": task, "dataset": dataset, "metrics": metrics}]}]


def _front_matter(facts: CardFacts, data_name: str, synthetic: bool) -> str:
    tags = ["lorapipe", "qlora", "lora", "product-descriptions", "e-commerce", *(["gguf"] if facts.gguf_files else [])]
    meta = {
        "license": facts.license,
        "library_name": "transformers" if facts.merged else "peft",
        "pipeline_tag": "text-generation",
        "tags": tags,
        # a Hub id only: a local base has none, and the card says where it came from instead
        **({"base_model": facts.base.hub_id} if facts.base else {}),
        "model-index": model_index(facts, data_name, synthetic),
    }
    return f"---\n{yaml.safe_dump(meta, sort_keys=False).strip()}\n---\n"


def _what(facts: CardFacts) -> str:
    method = facts.trained.lora.method
    if method == "full":
        return "fully fine-tuned model (every weight of the base trained)"
    return f"model ({METHOD_NAMES[method]} adapter merged into the base)" if facts.merged else what_is_trained(method)


def _base_name(facts: CardFacts) -> str:
    return facts.base.hub_id if facts.base else facts.origin.label


def _title(facts: CardFacts, synthetic: bool) -> str:
    synthetic_note = (
        "\n> **Demo model.** It was trained on the small SYNTHETIC sample shipped with lorapipe, not on "
        "real Amazon data: it shows the pipeline works, it is not useful for real descriptions.\n"
        if synthetic
        else ""
    )
    return f"""# {facts.repo_id.split("/")[-1]}

A {_what(facts)} for `{_base_name(facts)}` that writes an e-commerce product description from a product title.
Trained with lorapipe (a DVC pipeline for QLoRA fine-tuning) {facts.trained_at}.
{synthetic_note}"""


def _results(facts: CardFacts) -> str:
    decoding = decoding_name(facts.decoding).capitalize()
    return f"""## Results

{decoding} on {facts.scores.get("samples", "?")} held-out test titles, base model vs this model
(BLEU 0-100, ROUGE F1 0-1, perplexity of the reference descriptions: lower is better).

{markdown_table(score_rows(facts.scores))}
"""


def _training_data(facts: CardFacts, data_name: str, synthetic: bool) -> str:
    raw = facts.download
    return f"""## Training data

{data_name} (`{raw.get("source", "?")}`, member `{raw.get("file", "?")}`), cleaned,
deduplicated and sampled by the pipeline. Data version: the raw file's sha256
`{raw.get("sha256", "?")}` ({raw.get("bytes", 0):,} bytes).

Terms: {"the synthetic sample is generated by lorapipe; the real dataset's terms: " if synthetic else ""}{DATASET_TERMS}
"""


def _training(facts: CardFacts) -> str:
    published_against = ""
    if facts.base and (facts.origin.kind != "hub" or facts.base.hub_id != facts.origin.name):
        pinned = f" at revision `{facts.base.revision}`" if facts.base.revision else ""
        published_against = (
            f" The adapter loads `{facts.base.hub_id}`{pinned} from the Hub, which the publisher named as the "
            "same weights (`--base-model`)."
        )
    return f"""## Training

Base model: {facts.origin.sentence()}.{published_against} The settings below are the run's own record
(the adapter's `train_params.json`), not the repository's params.yaml of today:

```yaml
{_section(facts.trained, "quant")}
{_section(facts.trained, "lora")}
{_section(facts.trained, "train")}
```
"""


def _how_to_use(facts: CardFacts) -> str:
    return f"""## How to use

`pip install {requirements(facts)}`. This reproduces the outputs scored above
(the evaluate stage's prompt and decoding, in fp32 as on a CPU; on a GPU evaluate uses bf16):

```python
{usage(facts)}
```
{gguf_section(facts)}"""


def _prompt_format(facts: CardFacts) -> str:
    prompt_format = (
        f'the tokenizer\'s chat template with the system message "{INSTRUCTION}" and the title as the user message'
        if facts.chat_template
        else "a plain template (the base has no chat template)"
    )
    return f"""## Prompt format

The model was trained on {prompt_format}; for "{EXAMPLE_TITLE}" the whole prompt is:

```
{facts.prompt_example}
```
"""


def _use_and_license(facts: CardFacts) -> str:
    return f"""## Intended use and limits

For drafting product descriptions from titles, reviewed by a person before use. The model
invents details the title does not state (materials, sizes, features) and repeats the style and
the biases of Amazon listings; it is not a source of facts about a product. English only.

## License

`{facts.license}`, as the base model `{_base_name(facts)}`; its terms apply to this {_what(facts).split(" (")[0]}.
The training data has its own terms (above).
"""


def model_card(facts: CardFacts) -> str:
    """Markdown with Hub metadata: what was trained, on which data version, how well, how to use it."""
    synthetic = SYNTHETIC_MARK in str(facts.params.get("data", {}).get("url", ""))
    data_name = "The SYNTHETIC stand-in" if synthetic else "AmazonTitles-1.3MM product titles and descriptions"
    sections = [
        _front_matter(facts, data_name, synthetic),
        _title(facts, synthetic),
        _results(facts),
        _training_data(facts, data_name, synthetic),
        _training(facts),
        _how_to_use(facts),
        _prompt_format(facts),
        _use_and_license(facts),
    ]
    return "\n".join(sections)
