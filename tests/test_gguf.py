"""GGUF export with llama.cpp's converter: round trips through transformers' GGUF loader for SmolLM2's BPE
and TinyLlama's SentencePiece tokenizers, the Ollama Modelfile, and one-line errors."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from lorapipe.core.artifacts import EXPORT_JSON
from lorapipe.core.params import EvalParams, ExportParams, LoraParams, QuantParams, TrainParams
from lorapipe.data.data_files import read_text_table
from lorapipe.data.prompt import build_prompt, encode_prompts
from lorapipe.model.decoding import decoding_record
from lorapipe.model.generation import generate_texts
from lorapipe.model.gguf_export import modelfile, saved_decoding, unpack
from lorapipe.model.modeling import load_tokenizer
from lorapipe.train.training_record import TrainingRecord, save_training_record
from tests.workspace import ROOT, TITLES, assert_one_line_error, child_env, params_of, stage, write_params

DECODING = params_of(EvalParams, max_new_tokens=16, batch_size=4)


@pytest.fixture(scope="module", autouse=True)
def each_gguf_parsed_once():
    """gguf's reader parses a 49k-token vocabulary item by item (about 4 s on a 2-core CPU), and transformers
    parses a file anew for its config, its tokenizer and its weights: here each file is parsed once. The reader
    is read-only (a memory map), so what transformers loads is the same."""
    import gguf

    parsed: dict[tuple[str, int], gguf.GGUFReader] = {}
    reader = gguf.GGUFReader

    def read_once(path, mode="r"):
        key = (str(Path(path).resolve()), Path(path).stat().st_mtime_ns)
        if mode != "r":
            return reader(path, mode)
        if key not in parsed:
            parsed[key] = reader(path, mode)
        return parsed[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gguf, "GGUFReader", read_once)
        yield


def gguf_fields(path: Path, *keys: str) -> dict:
    import gguf

    reader = gguf.GGUFReader(path)
    fields = {key: reader.fields[key].contents() for key in keys if key in reader.fields}
    fields["weight_types"] = {
        t.tensor_type.name for t in reader.tensors if t.name.endswith("_proj.weight") or ".attn_" in t.name
    }
    return fields


def decode_gguf(folder: Path, name: str, prompts: list[str]) -> tuple[list[str], list[list[int]]]:
    """Greedy outputs of a GGUF file as a user loads it: model and tokenizer both from the GGUF."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    return generate_texts(model, tokenizer, ids, DECODING), ids


def decode_merged(folder: Path, prompts: list[str]) -> tuple[list[str], list[list[int]]]:
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    return generate_texts(model, tokenizer, ids, DECODING), ids


def first_tokens_agree(texts: list[str], expected: list[str], tokenizer, n: int = 8) -> int:
    """How many outputs start with the same n tokens as expected."""
    encode = lambda t: tokenizer(t, add_special_tokens=False)["input_ids"][:n]  # noqa: E731
    return sum(encode(a) == encode(b) for a, b in zip(texts, expected, strict=True))


def test_gguf_round_trip_decodes_like_the_merged_model(exported):
    """SmolLM2's BPE tokenizer on a Llama: f16 decodes exactly as the merged model, q8_0 nearly."""
    ws = exported
    merged, out = ws / "models/merged", ws / "models/gguf"
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "model-F16.gguf", "model-Q8_0.gguf"]
    metrics = json.loads((ws / EXPORT_JSON).read_text())["gguf"]
    assert set(metrics) == {"f16", "q8_0"} and metrics["q8_0"]["size_mb"] < metrics["f16"]["size_mb"]

    # The tokenizer metadata llama.cpp needs, as in llama.cpp's own SmolLM2 GGUF.
    keys = ("general.architecture", "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.eos_token_id")
    f16, q8 = gguf_fields(out / "model-F16.gguf", *keys), gguf_fields(out / "model-Q8_0.gguf", *keys)
    tokenizer = load_tokenizer(merged)
    assert f16["general.architecture"] == "llama" and f16["tokenizer.ggml.model"] == "gpt2"
    assert f16["tokenizer.ggml.pre"] == "smollm" and f16["tokenizer.ggml.eos_token_id"] == tokenizer.eos_token_id
    assert f16["weight_types"] == {"F16", "F32"} and "Q8_0" in q8["weight_types"]

    titles = TITLES + read_text_table(ws / "data/split/test.parquet")["title"].to_pylist()[:4]
    prompts = [build_prompt(tokenizer, t) for t in titles]
    expected, expected_ids = decode_merged(merged, prompts)
    texts, ids = decode_gguf(out, "model-F16.gguf", prompts)
    assert ids == expected_ids  # the GGUF's own tokenizer reads the prompts as training did
    assert texts == expected
    q8_texts, _ = decode_gguf(out, "model-Q8_0.gguf", prompts)
    assert first_tokens_agree(q8_texts, expected, tokenizer) >= 6  # of 8: q8_0 rounds every weight
    # The untuned base decodes differently: the comparisons above can tell the models apart.
    assert decode_merged(ws / "models/base", prompts)[0] != expected

    # The Modelfile: FROM the compact file, TEMPLATE = the training prompt around Ollama's {{ .Prompt }}.
    text = (out / "Modelfile").read_text()
    assert "FROM ./model-Q8_0.gguf\n" in text and f'PARAMETER stop "{tokenizer.eos_token}"' in text
    assert "PARAMETER num_predict 16" in text and "PARAMETER temperature 0" in text
    template = re.search(r'TEMPLATE """(.*?)"""', text, re.S).group(1)
    assert template.replace("{{ .Prompt }}", TITLES[0]) == build_prompt(tokenizer, TITLES[0])


@pytest.fixture(scope="session")
def tinyllama_like_dir(tmp_path_factory, tiny_model_dir, llama_tokenizer_dir) -> Path:
    """A 2-layer random Llama with TinyLlama's tokenizer (LLaMA SentencePiece, no chat template), saved as the
    base_model stage saves a hub model: safetensors, tokenizer.json and the tokenizer.model."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = Path(shutil.copytree(llama_tokenizer_dir, tmp_path_factory.mktemp("tinyllama-like") / "model"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    # The tiny Llama's shape, with LLaMA's vocabulary and special tokens.
    config = LlamaConfig.from_pretrained(tiny_model_dir)
    config.update({"vocab_size": len(tokenizer), "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": None})
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def test_tinyllama_sentencepiece_tokenizer_survives_the_export(tinyllama_like_dir, tmp_path):
    """Without the SentencePiece model the converter would give every token the same score and the GGUF
    would split words differently ("Oak Desk": ▁Oak ▁D esk, not ▁Oak ▁Des k)."""
    import sentencepiece
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    ws = tmp_path
    shutil.copytree(tinyllama_like_dir, ws / "models/base")
    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(ws / "models/base")
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    get_peft_model(base, lora).save_pretrained(ws / "models/trained")
    save_training_record(
        ws / "models/trained",
        TrainingRecord(params_of(TrainParams), params_of(LoraParams, r=4), params_of(QuantParams, bits=16)),
    )
    write_params(ws, export={"dtype": "fp32", "gguf_types": ["f16"]}, eval={"max_new_tokens": 16})
    stage(ws, "export.py")

    merged, gguf = ws / "models/merged", ws / "models/gguf/model-F16.gguf"
    assert (merged / "tokenizer.model").read_bytes() == (ws / "models/base/tokenizer.model").read_bytes()
    keys = [f"tokenizer.ggml.{k}" for k in ("model", "tokens", "scores", "add_bos_token", "add_space_prefix")]
    fields = gguf_fields(gguf, *keys)
    assert fields["tokenizer.ggml.model"] == "llama" and fields["tokenizer.ggml.add_bos_token"] is True
    assert fields.get("tokenizer.ggml.add_space_prefix", True) is True  # llama.cpp's default for SentencePiece
    processor = sentencepiece.SentencePieceProcessor(model_file=str(merged / "tokenizer.model"))
    pieces = range(processor.get_piece_size())
    assert fields["tokenizer.ggml.tokens"] == [processor.id_to_piece(i) for i in pieces]
    assert fields["tokenizer.ggml.scores"] == pytest.approx([processor.get_score(i) for i in pieces])

    # Words split as SentencePiece splits them ("Oak Desk": ▁Oak ▁Des k, not ▁Oak ▁D esk).
    from transformers import AutoTokenizer

    titles = [*TITLES, "Oak Desk, 120 x 60 cm, naïve café style"]
    gguf_tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    assert [gguf_tokenizer(t, add_special_tokens=False)["input_ids"] for t in titles] == [
        processor.encode(t) for t in titles
    ]
    # The GGUF weights decode the training prompts' ids like the merged model.
    tokenizer = load_tokenizer(merged)
    assert not tokenizer.chat_template  # the plain prompt template, as for TinyLlama v1.1
    prompts = [build_prompt(tokenizer, t) for t in titles]
    expected, _ = decode_merged(merged, prompts)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    assert generate_texts(gguf_model, tokenizer, encode_prompts(tokenizer, titles), DECODING) == expected

    template = re.search(r'TEMPLATE """(.*?)"""', (ws / "models/gguf/Modelfile").read_text(), re.S).group(1)
    assert "<s>" + template.replace("{{ .Prompt }}", "Oak Desk") == build_prompt(tokenizer, "Oak Desk")


def test_modelfile_carries_the_decoding_record_saved_with_the_model(smollm2_tokenizer, tmp_path):
    """The Modelfile's PARAMETERs are the generation_config.json export saved: sampling or greedy."""
    from transformers import GenerationConfig

    common = {"max_new_tokens": 64, "repetition_penalty": 1.2}
    sampling = params_of(EvalParams, **common, do_sample=True, temperature=0.7, top_p=0.9)
    greedy = params_of(EvalParams, **common, do_sample=False)
    for decoding, lines in [(sampling, ["temperature 0.7", "top_p 0.9"]), (greedy, ["temperature 0"])]:
        record = decoding_record(decoding)
        GenerationConfig(**record).save_pretrained(tmp_path)
        text = modelfile("model-Q8_0.gguf", smollm2_tokenizer, saved_decoding(tmp_path))
        assert text == modelfile("model-Q8_0.gguf", smollm2_tokenizer, record)
        parameters = [line.removeprefix("PARAMETER ") for line in text.splitlines() if line.startswith("PARAMETER ")]
        assert parameters[1:] == ["num_predict 64", "repeat_penalty 1.2", *lines]


def convert(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lorapipe.model.gguf_export", "convert", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=child_env(**env),
    )


def test_unsupported_or_corrupt_model_is_one_line_error(tiny_model_dir, tmp_path, llama_cpp_converter):
    unsupported = tmp_path / "unsupported"
    shutil.copytree(tiny_model_dir, unsupported)
    config = json.loads((unsupported / "config.json").read_text())
    (unsupported / "config.json").write_text(json.dumps({**config, "architectures": ["MadeUpForCausalLM"]}))
    result = convert(str(unsupported), str(tmp_path / "out1"))
    assert_one_line_error(result, "GGUF conversion to f16 failed", "MadeUpForCausalLM is not supported")

    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_model_dir, corrupt)
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert_one_line_error(convert(str(corrupt), str(tmp_path / "out2")), f"{corrupt}: GGUF conversion to f16 failed")
    assert_one_line_error(convert(str(tmp_path / "nothing"), str(tmp_path / "out3")), "no config.json")
    assert not any((tmp_path / f"out{i}").exists() for i in (1, 2, 3))


def test_missing_converter_is_one_line_error_before_any_work(tuned_workspace, tmp_path):
    env = child_env(LORAPIPE_LLAMA_CPP=str(tmp_path / "no-llama.cpp"))
    args = ["--out", str(tmp_path / "merged"), "--gguf", str(tmp_path / "gguf"), "--metrics", str(tmp_path / "e.json")]
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages/export.py"), *args],
        cwd=tuned_workspace,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert_one_line_error(result, "GGUF converter is missing", "make gguf-converter")
    assert not (tmp_path / "merged").exists()


def test_unpack_keeps_only_the_converter_files(tmp_path):
    sdist = tmp_path / "llama_cpp_python-9.9.tar.gz"
    root = "llama_cpp_python-9.9/vendor/llama.cpp/"
    members = {
        "convert_hf_to_gguf.py": b"print('convert')\n",
        "conversion/llama.py": b"",
        "gguf-py/gguf/__init__.py": b"",
        "LICENSE": b"MIT\n",
        "ggml/src/ggml.c": b"int main;\n",
        "models/ggml-vocab-llama-spm.gguf": b"GGUF",
    }
    with tarfile.open(sdist, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(root + name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    unpack(sdist, tmp_path / "llama.cpp")
    kept = sorted(
        str(p.relative_to(tmp_path / "llama.cpp")) for p in (tmp_path / "llama.cpp").rglob("*") if p.is_file()
    )
    assert kept == sorted(set(members) - {"ggml/src/ggml.c"})


@pytest.mark.slow
def test_export_pipeline_writes_smollm2_as_llama_cpp_does(readme_flow, smollm2_gguf):
    """The real architecture and tokenizer: `python stages/export.py` on the demo's SmolLM2 writes the
    same tokenizer and hyperparameters as llama.cpp's own SmolLM2 GGUF, and its f16 file decodes as the merged
    model."""
    repo = readme_flow.repo
    keys = [
        *(f"tokenizer.ggml.{k}" for k in ("model", "pre", "tokens", "merges", "token_type", "add_bos_token")),
        *(f"tokenizer.ggml.{k}_token_id" for k in ("bos", "eos", "padding")),
        "tokenizer.chat_template",
        *(f"llama.{k}" for k in ("block_count", "embedding_length", "attention.head_count_kv", "rope.freq_base")),
    ]
    ours = gguf_fields(repo / "models/gguf/model-F16.gguf", *keys)
    theirs = gguf_fields(smollm2_gguf, *keys)
    assert {k: ours.get(k) for k in keys} == {k: theirs.get(k) for k in keys}

    titles = [json.loads(line)["title"] for line in (repo / "metrics/eval_samples.jsonl").read_text().splitlines()]
    tokenizer = load_tokenizer(repo / "models/merged")
    prompts = [build_prompt(tokenizer, t) for t in titles]
    expected, expected_ids = decode_merged(repo / "models/merged", prompts)
    texts, ids = decode_gguf(repo / "models/gguf", "model-F16.gguf", prompts)
    assert ids == expected_ids and texts == expected  # q8_0's rounding: the round trip test above
    metrics = json.loads((repo / EXPORT_JSON).read_text())
    assert metrics["gguf"]["q8_0"]["size_mb"] < metrics["gguf"]["f16"]["size_mb"] < 300


def test_unknown_gguf_type_is_refused_with_its_key():
    from lorapipe.core.cli import UserError

    with pytest.raises(UserError, match=r"export.gguf_types \['q4_k_m'\]: must be among f32, f16, bf16, q8_0"):
        params_of(ExportParams, gguf_types=["f16", "q4_k_m"])
