"""Generation throughput: naive (nf4 base + unmerged adapter, batch 8) vs the evaluate stage's path.

    python bench/eval_throughput.py --prompts 64 --max-new-tokens 64

Both sides decode the same test prompts greedily in one run. Ours merges the adapter into the
dequantized nf4 base in bf16 (fp32 on the CPU) and decodes length-sorted batches of `--batch`. Run it after
`make demo` (or `dvc repro train`): it reads models/base, models/trained and data/split/test.parquet.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from lorapipe.core.params import EvalParams, QuantParams, load_params
from lorapipe.data.data_files import read_text_table
from lorapipe.data.prompt import encode_prompts
from lorapipe.model.generation import generate_texts
from lorapipe.model.modeling import load_model, load_tokenizer, load_tuned_model, pick_device, pick_dtype
from lorapipe.train.training_record import load_training_record


def timed_generate(model, tokenizer, prompts, params: EvalParams, sort: bool) -> tuple[list[str], float, int]:
    if not sort:  # the naive loop: batches in input order, as a notebook would write it
        started, outputs = time.perf_counter(), []
        for i in range(0, len(prompts), params.batch_size):
            outputs += generate_texts(model, tokenizer, prompts[i : i + params.batch_size], params)
    else:
        started = time.perf_counter()
        outputs = generate_texts(model, tokenizer, prompts, params)
    seconds = time.perf_counter() - started
    tokens = sum(len(tokenizer(o, add_special_tokens=False)["input_ids"]) + 1 for o in outputs)
    return outputs, seconds, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/base"))
    parser.add_argument("--adapter", type=Path, default=Path("models/trained"))
    parser.add_argument("--test", type=Path, default=Path("data/split/test.parquet"))
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64, help="our batch size (naive uses 8)")
    args = parser.parse_args()
    from peft import PeftModel

    device = pick_device()
    dtype = pick_dtype("auto", device, "decode")
    tokenizer = load_tokenizer(args.model)
    titles = read_text_table(args.test)["title"].to_pylist()[: args.prompts]
    prompts = encode_prompts(tokenizer, titles)

    decoding = load_params(EvalParams)  # params.yaml's eval, at the lengths and batch sizes compared here
    base = load_model(args.model, dtype, device, load_params(QuantParams))
    naive_model = PeftModel.from_pretrained(base, args.adapter)
    naive_params = dataclasses.replace(decoding, batch_size=8, max_new_tokens=args.max_new_tokens)
    naive_out, naive_s, naive_tokens = timed_generate(naive_model, tokenizer, prompts, naive_params, sort=False)
    del naive_model
    torch.cuda.empty_cache() if device.type == "cuda" else None

    trained = load_training_record(args.adapter)
    merged = load_tuned_model(args.model, args.adapter, trained.lora.method, trained.quant, dtype, device)
    ours_params = dataclasses.replace(decoding, batch_size=args.batch, max_new_tokens=args.max_new_tokens)
    ours_out, ours_s, ours_tokens = timed_generate(merged, tokenizer, prompts, ours_params, sort=True)

    naive_rate, ours_rate = naive_tokens / naive_s, ours_tokens / ours_s
    same = sum(a == b for a, b in zip(naive_out, ours_out, strict=True))
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"device {device_name}, {len(prompts)} prompts, {args.max_new_tokens} new tokens max, greedy")
    print(f"naive  nf4 + unmerged adapter, batch 8:      {naive_rate:8.1f} tokens/s ({naive_s:.1f} s)")
    print(f"ours   merged {str(dtype)[6:]}, sorted batch {args.batch}: {ours_rate:8.1f} tokens/s ({ours_s:.1f} s)")
    print(f"ratio  {ours_rate / naive_rate:.1f}x; identical greedy outputs: {same}/{len(prompts)}")
    print("(same weights; a merged matmul rounds differently from base + adapter, so a few outputs may diverge)")


if __name__ == "__main__":
    main()
