"""Try the tuned model: type a product title, read the base and the tuned descriptions side by side.

    python app.py [--models models] [--host 127.0.0.1] [--port 7860] [--share]

Local models only, never the Hub: models/base and what train wrote in models/trained (an adapter, merged
into the base as the evaluate stage does, or a fully tuned model). After `make demo` it starts offline on
the demo's SmolLM2. Decoding starts from params.yaml's `eval` section; the sliders change it per request.
The page says what it serves: its training params and the DVC experiment it came from.
`--share` asks Gradio for a public link (on Colab, where localhost is not reachable).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import gradio as gr
import torch
import yaml

from lorapipe.core.artifacts import BASE, TRAINED
from lorapipe.core.cli import UserError, log, run_cli
from lorapipe.core.params import EvalParams, TokenizeParams, load_params
from lorapipe.core.vcs import git
from lorapipe.data.prompt import encode_prompts, truncate_title
from lorapipe.model.generation import generate_texts
from lorapipe.model.modeling import load_model, load_tokenizer, load_tuned_model, pick_device, pick_dtype
from lorapipe.train.training_record import load_training_record

# System fonts only: the default theme fetches Google Fonts, which an offline machine cannot reach.
THEME = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def trained_md5(lock_text: str) -> str:
    """models/trained's hash in a dvc.lock, or ""."""
    outs = (yaml.safe_load(lock_text) or {}).get("stages", {}).get("train", {}).get("outs", [])
    return next((out.get("md5", "") for out in outs if out.get("path") == TRAINED.as_posix()), "")


def experiments_of(md5: str) -> list[str]:
    """The `dvc exp` experiments whose committed dvc.lock holds these trained weights."""
    refs = git("for-each-ref", "--format=%(refname)", "refs/exps").split()
    return [
        ref.rsplit("/", 1)[-1]
        for ref in refs
        if not ref.startswith("refs/exps/exec/") and trained_md5(git("show", f"{ref}:dvc.lock")) == md5
    ]


def serving_label(models: Path) -> str:
    """What the app serves: its training params, and (for the workspace's) its DVC version and experiment."""
    folder = models / TRAINED.name
    label = f"`{folder}`"
    try:
        trained = load_training_record(folder)
    except UserError:
        trained = None  # the app refuses to start on it anyway; a label must not fail
    if trained:
        steps = trained.train.max_steps
        length = f"{steps} steps" if steps else f"{trained.train.epochs:g} epochs"
        rank = "" if trained.lora.method == "full" else f", lora.r {trained.lora.r}"
        label += f": lora.method {trained.lora.method}, quant.bits {trained.quant.bits}{rank}, {length}"
    lock = Path("dvc.lock")  # describes models/trained of this workspace only
    is_workspace = lock.is_file() and folder.resolve() == TRAINED.resolve()
    md5 = trained_md5(lock.read_text()) if is_workspace else ""
    if md5:
        experiments = ", ".join(experiments_of(md5)) or "none (workspace only)"
        commit = git("rev-parse", "--short", "HEAD").strip()
        label += f"; dvc.lock md5 `{md5[:10]}`, experiment `{experiments}`, commit `{commit}`"
    return label


class Describer:
    """The base and the tuned model, loaded once; `describe` runs both on one title."""

    def __init__(self, models: Path, prompt_tokens: int) -> None:
        base, folder = models / BASE.name, models / TRAINED.name
        if not base.is_dir():
            raise UserError(f"{base}: not found; run `make demo` (or `dvc repro base_model`) first")
        trained = load_training_record(folder)
        device = pick_device()
        dtype = pick_dtype("auto", device, "decode")
        self.tokenizer = load_tokenizer(base)
        self.prompt_tokens = prompt_tokens
        log.info(f"app: loading {base} and {folder} on {device.type}")
        self.models = {
            "base": load_model(base, dtype, device),
            "tuned": load_tuned_model(base, folder, trained.lora.method, trained.quant, dtype, device),
        }

    def describe(self, title: str, params: EvalParams) -> tuple[str, str]:
        title = " ".join(title.split())
        if not title:
            raise gr.Error("Type a product title first.")
        title, _ = truncate_title(self.tokenizer, title, self.prompt_tokens)
        prompt = encode_prompts(self.tokenizer, [title])[0]  # what the title spells stays text, whatever it is
        texts = []
        for model in self.models.values():
            torch.manual_seed(params.seed)  # the same title and settings give the same text
            texts.append(generate_texts(model, self.tokenizer, [prompt], params, desc="app")[0])
        return texts[0], texts[1]


def build_app(describer: Describer, defaults: EvalParams, models: Path, serving: str) -> gr.Blocks:
    def describe_both(title, max_new_tokens, do_sample, temperature, top_p, repetition_penalty):
        params = dataclasses.replace(
            defaults,
            batch_size=1,
            max_new_tokens=int(max_new_tokens),
            do_sample=bool(do_sample),
            temperature=float(temperature),
            top_p=float(top_p),
            repetition_penalty=float(repetition_penalty),
        )
        return describer.describe(title, params)

    with gr.Blocks(title="lorapipe: product descriptions", analytics_enabled=False) as app:
        gr.Markdown(
            "## Product description from a title\n"
            f"Base model and the tuned model (adapter merged, or fully tuned) from `{models}/`, same prompt, "
            "same decoding.\n\n"
            f"Serving {serving}",
            elem_id="serving",
        )
        title = gr.Textbox(label="Product title", placeholder="Stainless Steel Travel Mug, 16 oz", elem_id="title")
        button = gr.Button("Describe", variant="primary", elem_id="describe")
        with gr.Row():
            base = gr.Textbox(label="Base model", lines=8, elem_id="base-output")
            tuned = gr.Textbox(label="Tuned model", lines=8, elem_id="tuned-output")
        with gr.Accordion("Decoding (defaults: params.yaml eval)", open=True):
            with gr.Row():
                max_new = gr.Slider(8, 512, value=defaults.max_new_tokens, step=8, label="max new tokens")
                penalty = gr.Slider(1.0, 2.0, value=defaults.repetition_penalty, step=0.05, label="repetition penalty")
            with gr.Row():
                sample = gr.Checkbox(value=defaults.do_sample, label="sample (off: greedy)")
                temperature = gr.Slider(0.05, 2.0, value=defaults.temperature, step=0.05, label="temperature")
                top_p = gr.Slider(0.05, 1.0, value=defaults.top_p, step=0.05, label="top p")
        inputs = [title, max_new, sample, temperature, top_p, penalty]
        button.click(describe_both, inputs, [base, tuned])
        title.submit(describe_both, inputs, [base, tuned])
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", type=Path, default=TRAINED.parent, help=f"folder holding {BASE.name}/ and {TRAINED.name}/"
    )
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to reach it from other machines")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="a public gradio.live link too (Colab)")
    args = parser.parse_args()
    defaults, prompt_tokens = load_params(EvalParams), load_params(TokenizeParams).prompt_tokens
    describer = Describer(args.models, prompt_tokens)
    serving = serving_label(args.models)
    log.info(f"app: serving {serving.replace('`', '')}")
    app = build_app(describer, defaults, args.models, serving)
    app.launch(server_name=args.host, server_port=args.port, share=args.share, ssr_mode=False, theme=THEME)


if __name__ == "__main__":
    run_cli(main)
