from __future__ import annotations

import gzip
import itertools
import random

import pytest
import torch

from lorapipe.core.params import CleanParams
from lorapipe.data.cleaning import read_fields
from lorapipe.data.packing import IGNORE, PackedRow, collate, example_labels, pack_examples, read_rows, write_rows
from lorapipe.data.prompt import Example, build_prompt, build_prompts, encode_examples
from tests.workspace import ROOT, params_of


def make_examples(n: int, seed: int = 0) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt_len = rng.randint(3, 12)
        ids = [rng.randint(5, 999) for _ in range(prompt_len + rng.randint(2, 40))]
        out.append(Example(ids, prompt_len, False, False))
    return out


def test_packing_keeps_every_token_once_and_respects_seq_len():
    examples = make_examples(300)
    rows = pack_examples(examples, seq_len=128, completion_only=True)
    assert all(len(r.input_ids) <= 128 for r in rows)
    # Split each row back into examples at the position-id restarts: the multiset of examples is intact.
    recovered = []
    for r in rows:
        starts = [i for i, p in enumerate(r.position_ids) if p == 0] + [len(r.input_ids)]
        recovered += [tuple(r.input_ids[a:b]) for a, b in itertools.pairwise(starts)]
    assert sorted(recovered) == sorted(tuple(ex.input_ids) for ex in examples)
    tokens = sum(len(ex.input_ids) for ex in examples)
    assert tokens / (len(rows) * 128) > 0.9  # best-fit decreasing leaves little empty space


def test_completion_only_labels_mask_exactly_the_prompt():
    ex = Example([11, 12, 13, 14, 15, 2], prompt_len=3, prompt_truncated=False, response_truncated=False)
    assert example_labels(ex, completion_only=True) == [IGNORE, IGNORE, IGNORE, 14, 15, 2]
    # Without completion-only, only the first token is masked: nothing predicts an example's start.
    assert example_labels(ex, completion_only=False) == [IGNORE, 12, 13, 14, 15, 2]


def test_collate_pads_as_a_separate_sequence():
    rows = [PackedRow([5, 6, 7], [IGNORE, 6, 7], [0, 1, 2]), PackedRow([8], [IGNORE], [0])]
    batch = collate(rows, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [IGNORE, IGNORE, IGNORE]]
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 0, 1]]


def test_rows_round_trip_through_parquet_and_other_files_are_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lorapipe.core.cli import UserError

    rows = pack_examples(make_examples(8, seed=4), 64, completion_only=True)
    write_rows(rows, tmp_path / "train.parquet")

    def as_lists(rows: list[PackedRow]) -> list[tuple[list[int], ...]]:
        return [(list(r.input_ids), list(r.labels), list(r.position_ids)) for r in rows]

    assert as_lists(read_rows(tmp_path / "train.parquet")) == as_lists(rows)
    pq.write_table(pa.table({"title": ["x"], "content": ["y"]}), tmp_path / "split.parquet")
    with pytest.raises(UserError, match="expected input_ids, labels, position_ids; rerun tokenize"):
        read_rows(tmp_path / "split.parquet")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(UserError, match="not a readable Parquet file"):
        read_rows(tmp_path / "broken.parquet")


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_examples_do_not_attend_to_each_other(tiny_model_dir, attn):
    """Logits of each example inside a packed row equal the logits of that example run alone."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attn).eval()
    examples = make_examples(6, seed=1)
    row = pack_examples(examples, seq_len=512, completion_only=True)
    assert len(row) == 1
    batch = collate([row[0]], pad_id=0)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        offset = 0
        for ex in examples:  # pack_examples keeps input order inside a row
            alone = model(input_ids=torch.tensor([ex.input_ids]), use_cache=False).logits[0]
            torch.testing.assert_close(packed[offset : offset + len(ex.input_ids)], alone, atol=1e-4, rtol=1e-4)
            offset += len(ex.input_ids)


def test_packed_loss_equals_mean_of_unpacked_losses(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    examples = make_examples(4, seed=2)
    batch = collate(pack_examples(examples, 512, completion_only=True)[:1], pad_id=0)
    total = count = 0.0
    with torch.no_grad():
        packed = float(model(**batch, use_cache=False).loss)
        for ex in examples:
            labels = torch.tensor([example_labels(ex, True)])
            n = int((labels[:, 1:] != IGNORE).sum())
            total += float(model(input_ids=torch.tensor([ex.input_ids]), labels=labels).loss) * n
            count += n
    assert packed == pytest.approx(total / count, rel=1e-5)


def test_prompt_uses_chat_template_and_is_shared(smollm2_tokenizer):
    prompt = build_prompt(smollm2_tokenizer, "Acme Mug")
    assert prompt.startswith("<|im_start|>system") and prompt.endswith("<|im_start|>assistant\n")
    [ex] = encode_examples(smollm2_tokenizer, ["Acme Mug"], ["A fine mug."], prompt_tokens=75, response_tokens=450)
    prompt_ids = smollm2_tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert ex.input_ids[: ex.prompt_len] == prompt_ids
    assert ex.input_ids[-1] == smollm2_tokenizer.eos_token_id
    assert smollm2_tokenizer.decode(ex.input_ids[ex.prompt_len : -1]) == "A fine mug."


def test_plain_template_without_chat_template(smollm2_tokenizer):
    import copy

    plain = copy.deepcopy(smollm2_tokenizer)
    plain.chat_template = None
    prompt = build_prompt(plain, "Acme Mug")
    assert "### Title:\nAcme Mug\n\n### Description:\n" in prompt


def test_token_budgets_truncate_and_count(smollm2_tokenizer):
    title, content = "word " * 100, "text " * 600
    [ex] = encode_examples(smollm2_tokenizer, [title], [content], prompt_tokens=10, response_tokens=50)
    assert ex.prompt_truncated and ex.response_truncated
    assert len(ex.input_ids) - ex.prompt_len == 51  # 50 response tokens + EOS


def reference_example(tokenizer, title: str, content: str, prompt_tokens: int, response_tokens: int) -> Example:
    """Encoding as it was before batching: three tokenizer calls and one template render per example."""
    ids = tokenizer(title, add_special_tokens=False)["input_ids"]
    cut = len(ids) > prompt_tokens
    title = tokenizer.decode(ids[:prompt_tokens]).strip() if cut else title
    prompt_ids = tokenizer(build_prompt(tokenizer, title), add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(content, add_special_tokens=False)["input_ids"]
    response = [*response_ids[:response_tokens], tokenizer.eos_token_id]
    return Example(prompt_ids + response, len(prompt_ids), cut, len(response_ids) > response_tokens)


@pytest.mark.parametrize("template", ["chat", "plain", "trims"])
def test_batched_encoding_equals_one_example_at_a_time(smollm2_tokenizer, template):
    import copy

    tokenizer = copy.deepcopy(smollm2_tokenizer)
    if template == "plain":
        tokenizer.chat_template = None
    if template == "trims":  # a template that changes the title: rendered per title, never split
        tokenizer.chat_template = "<|im_start|>user\n{{ messages[1]['content'] | trim | upper }}<|im_end|>\n"
    # The synthetic sample's raw records: entities, odd characters and long texts included.
    clean = params_of(CleanParams)
    with gzip.open(ROOT / "data/synthetic/trn.json.gz") as f:
        rows = [r for line in f if isinstance(r := read_fields(line, clean), tuple)][:400]
    rows += [(" ".join(["Long"] * 90), "word " * 500), ("  padded {title}  ", "&amp; odd\u200b text")]
    titles, contents = [t for t, _ in rows], [c for _, c in rows]
    expected = [reference_example(tokenizer, t, c, 20, 60) for t, c in rows]
    assert encode_examples(tokenizer, titles, contents, 20, 60) == expected
    assert any(ex.prompt_truncated for ex in expected) and any(ex.response_truncated for ex in expected)
    assert build_prompts(tokenizer, titles) == [build_prompt(tokenizer, t) for t in titles]


def test_completion_loss_equals_the_full_logits_loss_and_its_gradients(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from lorapipe.train.losses import completion_loss

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    rows = pack_examples(make_examples(12, seed=3), 128, completion_only=True)
    batch = collate(rows[:3], pad_id=0)  # right-padded rows of unequal length
    items = int((batch["labels"][:, 1:] != IGNORE).sum())
    full = model(**batch, use_cache=False, num_items_in_batch=items).loss
    full.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    ours = completion_loss(model, batch, items)
    ours.backward()
    assert float(ours) == pytest.approx(float(full), rel=1e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-4, atol=1e-6)
