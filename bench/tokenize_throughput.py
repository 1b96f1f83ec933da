"""Benchmark the tokenize stage's encoding: one example at a time vs batched, vs `datasets` map.

    python bench/tokenize_throughput.py [--examples 40000] [--model models/base]

Input: 40,000 (title, description) pairs of the synthetic generator (English-like text), the
demo's SmolLM2 tokenizer (after `make demo`). Each variant runs in its own process, one after
another, and must produce the same token ids as the first. `datasets` is optional
(`pip install datasets`); without it that row is skipped. The last row is the floor of any exact
method: it encodes only each title and each description once, in one batched call.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lorapipe.core.params import CleanParams, load_params
from lorapipe.data.cleaning import parse_line

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "one at a time (before: 3 tokenizer calls + 1 template render per example)": "one",
    "batched encode_examples, 1 thread": "batched",
    "batched encode_examples, Rust threads on (TOKENIZERS_PARALLELISM=true)": "batched-parallel",
    "datasets map(batched=True, num_proc=2) over encode_examples": "datasets",
    # Not a stage: only the text no exact method can skip (each title and description once).
    "floor: titles + descriptions only, one batched call, Rust threads on": "floor",
}


def run_variant(kind: str, pairs: Path, model: Path, out: Path) -> None:
    """Encode the pairs one way; write the ids (for the equality check) and the seconds taken."""
    from lorapipe.data.prompt import build_prompt, encode_examples
    from lorapipe.model.modeling import load_tokenizer

    rows = json.loads(pairs.read_text())
    titles, contents = [t for t, _ in rows], [c for _, c in rows]
    tokenizer = load_tokenizer(model)
    started = time.perf_counter()
    if kind == "one":
        ids = []
        for title, content in rows:  # the stage's code before batching
            t_ids = tokenizer(title, add_special_tokens=False)["input_ids"]
            title = tokenizer.decode(t_ids[:75]).strip() if len(t_ids) > 75 else title
            prompt = tokenizer(build_prompt(tokenizer, title), add_special_tokens=False)["input_ids"]
            response = tokenizer(content, add_special_tokens=False)["input_ids"][:450]
            ids.append([*prompt, *response, tokenizer.eos_token_id])
    elif kind == "floor":
        encodings = tokenizer.backend_tokenizer.encode_batch_fast(titles + contents, add_special_tokens=False)
        ids = [e.ids for e in encodings]
    elif kind.startswith("batched"):
        ids = [ex.input_ids for ex in encode_examples(tokenizer, titles, contents, 75, 450)]
    else:
        import datasets

        def encode(batch: dict) -> dict:
            examples = encode_examples(tokenizer, batch["title"], batch["content"], 75, 450)
            return {"input_ids": [ex.input_ids for ex in examples]}

        data = datasets.Dataset.from_dict({"title": titles, "content": contents})
        mapped = data.map(encode, batched=True, batch_size=4096, num_proc=2, remove_columns=["title", "content"])
        ids = mapped["input_ids"][:]  # a Column in datasets 4+: its values
    seconds = time.perf_counter() - started
    out.write_text(json.dumps({"seconds": seconds, "ids": ids}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=40_000)
    parser.add_argument("--model", type=Path, default=ROOT / "models/base")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--pairs", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        return run_variant(args.variant, args.pairs, args.model, args.out)

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "trn.json.gz"
        generator = [sys.executable, str(ROOT / "scripts/make_synthetic_data.py"), str(raw)]
        subprocess.run([*generator, "--records", str(args.examples * 2)], check=True, capture_output=True)
        clean = load_params(CleanParams)
        with gzip.open(raw) as f:  # cleaned as the clean stage does
            rows = [r for line in f if isinstance(r := parse_line(line, clean), tuple)]
        pairs = Path(tmp) / "pairs.json"
        pairs.write_text(json.dumps(rows[: args.examples]))
        print(f"{len(rows[: args.examples]):,} examples, tokenizer of {args.model}")
        reference, first = None, None
        for label, kind in VARIANTS.items():
            if kind == "datasets":
                try:
                    import datasets  # noqa: F401
                except ImportError:
                    print(f"{label}: skipped (pip install datasets)")
                    continue
            out = Path(tmp) / f"{kind}.json"
            parallel = str(kind in ("batched-parallel", "floor")).lower()
            env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": parallel}
            command = [sys.executable, __file__, "--variant", kind, "--pairs", str(pairs), "--out", str(out)]
            subprocess.run([*command, "--model", str(args.model)], check=True, env=env, stderr=subprocess.DEVNULL)
            result = json.loads(out.read_text())
            reference = reference or result["ids"]
            first = first or result["seconds"]
            if kind == "floor":
                same = "not a stage's ids"
            else:
                same = "same ids" if result["ids"] == reference else "DIFFERENT ids"
            print(f"{label}: {result['seconds']:.2f} s, {first / result['seconds']:.1f}x, {same}")


if __name__ == "__main__":
    main()
