"""Benchmark output health's cost beside the scores evaluate already computes, on 1,000 samples.

    python bench/eval_health.py [--samples 1000] [--repeats 3]

Input: `--samples` (title, reference) pairs of the synthetic generator, and as outputs a mix of what
small models write: a copy of the reference, a loop of one phrase (256 words), the title alone, an
empty text, and a reference with an invented figure. Side by side in one process, best of
`--repeats`: BLEU + ROUGE per sample (scoring.sample_scores, what evaluate did before), then output
health per sample and its headline (output_health), then the report's 95% bootstrap of each
health metric (reporting.compare, 2,000 resamples) beside those of the quality metrics.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from make_synthetic_data import product  # noqa: E402

from lorapipe.eval.output_health import health_scores, sample_health  # noqa: E402
from lorapipe.eval.scoring import sample_scores  # noqa: E402
from lorapipe.reporting.compare import HEADLINE, HEALTH, tuned_vs_base  # noqa: E402


def outputs_like_small_models(titles: list[str], references: list[str]) -> list[tuple[str, bool]]:
    """(text, runaway) per sample: five kinds of output in turn."""
    kinds = [
        lambda t, r: (r, False),
        lambda t, r: (" ".join(["a great choice for every home"] * 43), True),
        lambda t, r: (t, False),
        lambda t, r: ("", False),
        lambda t, r: (r + " Comes with a 5-year warranty and holds 1000L.", False),
    ]
    return [kinds[i % len(kinds)](t, r) for i, (t, r) in enumerate(zip(titles, references, strict=True))]


def best_of(repeats: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(0)
    pairs = [product(rng)[:2] for _ in range(args.samples)]
    titles, references = [t for t, _ in pairs], [r for _, r in pairs]
    outputs = outputs_like_small_models(titles, references)
    texts = [text for text, _ in outputs]
    words = sum(len(text.split()) for text in texts)

    def health() -> None:
        triples = zip(outputs, titles, references, strict=True)
        samples = [sample_health(text, title, ref, runaway) for (text, runaway), title, ref in triples]
        health_scores(samples, texts)

    quality = best_of(args.repeats, lambda: sample_scores(texts, references))
    health_s = best_of(args.repeats, health)
    scored = sample_scores(texts, references)
    models = [
        {**scores, "loss": 2.0, "tokens": 30, "text": text, **sample_health(text, title, reference, runaway)}
        for (text, runaway), title, reference, scores in zip(outputs, titles, references, scored, strict=True)
    ]
    # As base, each sample's neighbour's output: another kind, so the two sides differ.
    rows = [{"id": str(i), "base": models[i - 1], "tuned": models[i]} for i in range(len(models))]
    quality_ci = best_of(1, lambda: [tuned_vs_base(rows, name) for name in HEADLINE])
    health_ci = best_of(1, lambda: [tuned_vs_base(rows, name) for name in HEALTH])
    print(f"{len(pairs):,} samples, {words:,} output words, best of {args.repeats}")
    print("| | seconds | vs BLEU + ROUGE |\n|---|---:|---:|")
    print(f"| BLEU + ROUGE per sample (scoring.sample_scores) | {quality:.3f} | 1.00x |")
    print(f"| output health per sample + headline | {health_s:.3f} | {health_s / quality:.2f}x |")
    print(f"| report bootstrap, 3 quality metrics (ROUGE-L, BLEU, perplexity) | {quality_ci:.3f} | |")
    print(f"| report bootstrap, {len(HEALTH)} health metrics | {health_ci:.3f} | |")


if __name__ == "__main__":
    main()
