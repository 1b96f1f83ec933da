"""The base model decoded once (generate_base) and scored by evaluate from that file, on the tiny Llama."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from lorapipe.core.artifacts import BASE_OUTPUTS, EVAL_DETAILS, EVAL_SAMPLES, EVAL_SCORES
from tests.workspace import (
    assert_one_line_error,
    built_once,
    copy_workspace,
    kept_read_only,
    params_of,
    stage,
    stage_args,
    update_params,
)

EVAL = {"max_samples": 6, "batch_size": 4, "max_new_tokens": 8, "report_samples": 2}


@pytest.fixture(scope="session")
def evaluated(tuned_workspace, tmp_path_factory) -> Iterator[Path]:
    """A copy of the trained tiny-Llama workspace after generate_base and evaluate; built once, read-only."""

    def build(ws: Path) -> None:
        ws.rmdir()
        copy_workspace(tuned_workspace, ws)
        update_params(ws, {"eval": EVAL})
        stage(ws, "generate_base.py", *stage_args("generate_base"))
        stage(ws, "evaluate.py", *stage_args("evaluate"))

    with kept_read_only(built_once(tmp_path_factory, "evaluated", build)[0]) as ws:
        yield ws


def test_evaluate_reports_the_base_scores_of_a_direct_decoding(evaluated):
    """What evaluate did itself before generate_base existed: same rows, prompts and decoding."""
    import torch

    from lorapipe.core.params import EvalParams, TokenizeParams
    from lorapipe.data.data_files import read_text_table
    from lorapipe.data.prompt import build_prompt, encode_examples, truncate_title
    from lorapipe.eval.output_health import health_scores, sample_health
    from lorapipe.eval.scoring import corpus_scores, sample_scores
    from lorapipe.model.generation import generate
    from lorapipe.model.modeling import load_model, load_tokenizer, pick_device, pick_dtype
    from lorapipe.train.losses import reference_losses

    ws, params = evaluated, params_of(EvalParams, **EVAL)
    tok_params = params_of(TokenizeParams, **yaml.safe_load((ws / "params.yaml").read_text())["tokenize"])
    table = read_text_table(ws / "data/split/test.parquet")
    rows = np.sort(np.random.default_rng(params.seed).permutation(table.num_rows)[: params.max_samples])
    titles = [table["title"][int(i)].as_py() for i in rows]
    references = [table["content"][int(i)].as_py() for i in rows]
    device = pick_device()
    tokenizer = load_tokenizer(ws / "models/base")
    model = load_model(ws / "models/base", pick_dtype("auto", device, "decode"), device)
    prompts = [build_prompt(tokenizer, truncate_title(tokenizer, t, tok_params.prompt_tokens)[0]) for t in titles]
    torch.manual_seed(params.seed)
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]  # plain titles: plain text
    generated = generate(model, tokenizer, prompt_ids, params)
    texts = [g.text for g in generated]
    examples = encode_examples(tokenizer, titles, references, tok_params.prompt_tokens, tok_params.response_tokens)
    losses = reference_losses(model, examples, tokenizer.pad_token_id, params.batch_size, device)
    direct = corpus_scores(sample_scores(texts, references))
    direct["perplexity"] = math.exp(sum(loss * n for loss, n in losses) / sum(n for _, n in losses))
    per_sample = zip(texts, titles, references, generated, strict=True)
    health = [sample_health(text, title, reference, g.runaway) for text, title, reference, g in per_sample]
    direct |= health_scores(health, texts)

    result = json.loads((ws / EVAL_DETAILS).read_text())
    assert result["base"] == {k: round(v, 4) for k, v in direct.items()}
    assert result["samples"] == 6 and set(result) == {"base", "tuned", "delta", "samples", "generation_tokens_per_s"}
    scores = [json.loads(line) for line in (ws / EVAL_SCORES).read_text().splitlines()]
    assert [s["base"]["text"] for s in scores] == texts and [s["title"] for s in scores] == titles
    assert [s["base"]["loss"] for s in scores] == [round(loss, 4) for loss, _ in losses]
    assert [s["base"]["runaway"] for s in scores] == [g.runaway for g in generated]
    assert [s["base"]["unsupported_figures"] for s in scores] == [h["unsupported_figures"] for h in health]
    assert [s["tuned"]["text"] for s in scores] != texts  # the tuned model did decode on its own
    samples = (ws / EVAL_SAMPLES).read_text().splitlines()
    assert len(samples) == 2 and set(json.loads(samples[0])) == {"id", "title", "reference", "base", "tuned"}
    made = json.loads((ws / BASE_OUTPUTS).read_text())
    assert [s["prompt"] for s in made["samples"]] == prompts and made["settings"]["eval.max_new_tokens"] == 8


def tampered(ws: Path, to: Path, change) -> str:
    """A copy of the base outputs file with `change` applied to its JSON; its path."""
    made = json.loads((ws / BASE_OUTPUTS).read_text())
    change(made)
    to.write_text(json.dumps(made))
    return str(to)


MISMATCHES = {
    "settings": (lambda m: m["settings"].update({"eval.max_new_tokens": 99}), "with eval.max_new_tokens 99 (now 8)"),
    "weights": (lambda m: m["weights_sha256"].update({"model.safetensors": "0" * 64}), "another base model"),
    "rows": (lambda m: m["samples"].pop(), "titles are not those evaluate scores"),
    "references": (lambda m: m["samples"][0].update(reference="other"), "references are not those"),
    "prompts": (lambda m: m["samples"][1].update(prompt="### Title:\n"), "prompts are not those"),
    # A file from before output health: its texts cannot say whether decoding stopped at EOS.
    "no-runaway": (lambda m: [row.pop("runaway") for row in m["samples"]], "made before the runaway flag"),
}


def test_evaluate_refuses_a_base_outputs_file_made_for_other_samples_in_one_line(evaluated, tmp_path):
    """One line naming the file and the stage to run, before any model is loaded and with nothing written. Each
    kind of mismatch is refused by the same check (test_every_mismatch_of_the_base_outputs_file_is_refused)."""
    path = tmp_path / "base_outputs.json"
    change, fragment = MISMATCHES["rows"]
    tampered(evaluated, path, change)
    args = list(stage_args("evaluate", str(tmp_path / "metrics")))
    args[2] = str(path)
    result = stage(evaluated, "evaluate.py", *args, check=False)
    assert_one_line_error(result, str(path), fragment, "dvc repro generate_base")
    assert not (tmp_path / "metrics").exists()


@pytest.fixture(scope="module")
def checked_against(evaluated) -> tuple:
    """What evaluate checks the base outputs file against in `evaluated`: settings, base weights, samples."""
    from lorapipe.core.params import PARAMS_FILE, EvalParams, TokenizeParams, parse_section, read_params_file
    from lorapipe.eval.evaluation import base_settings, load_eval_inputs, read_base_outputs, weights_sha256

    test, model = (evaluated / arg for arg in stage_args("evaluate")[:2])
    sections = read_params_file(evaluated / PARAMS_FILE)  # not load_params, which records what a stage read
    params = parse_section(EvalParams, sections["eval"])
    tok_params = parse_section(TokenizeParams, sections["tokenize"])
    inputs = load_eval_inputs(test, model, params, tok_params)
    checked = base_settings(params, tok_params), weights_sha256(model), inputs.fields()
    outputs, _ = read_base_outputs(evaluated / BASE_OUTPUTS, *checked)  # the file evaluate scored passes
    assert len(outputs.texts) == EVAL["max_samples"]
    return checked


@pytest.mark.parametrize("case", [*MISMATCHES, "missing", "not-json"])
def test_every_mismatch_of_the_base_outputs_file_is_refused(evaluated, checked_against, tmp_path, case):
    from lorapipe.core.cli import UserError
    from lorapipe.eval.evaluation import read_base_outputs

    path = tmp_path / "base_outputs.json"
    if case in MISMATCHES:
        change, fragment = MISMATCHES[case]
        tampered(evaluated, path, change)
    elif case == "not-json":
        path.write_text('{"settings": ')
        fragment = "not a base outputs file"
    else:
        fragment = "not found"
    with pytest.raises(UserError) as refused:
        read_base_outputs(path, *checked_against)
    message = str(refused.value)
    assert "\n" not in message and all(part in message for part in (str(path), fragment, "dvc repro generate_base"))


def test_base_outputs_of_another_dtype_are_scored_with_one_warning(evaluated, tmp_path):
    """Base outputs another device decoded (a GPU's bf16 copy from the remote) are scored, with a warning."""
    ws = copy_workspace(evaluated, tmp_path / "ws")  # evaluate runs to the end: its MLflow run goes to the copy
    path = tampered(ws, tmp_path / "base_outputs.json", lambda m: m.update(dtype="torch.float64"))
    args = list(stage_args("evaluate", str(tmp_path / "metrics")))
    args[2] = path
    result = stage(ws, "evaluate.py", *args)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and f"{path} was decoded in torch.float64, the tuned model decodes in" in warnings[0]
    scores = (tmp_path / "metrics" / EVAL_SCORES.name).read_text()
    assert scores == (evaluated / EVAL_SCORES).read_text()
