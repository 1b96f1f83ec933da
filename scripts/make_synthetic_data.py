"""Generate the SYNTHETIC stand-in for AmazonTitles-1.3MM's trn.json.gz (offline demo and tests).

    python scripts/make_synthetic_data.py data/synthetic/trn.json.gz

Same schema as the real dump (gzip JSON lines: uid, title, content, target_ind, target_rel),
every uid prefixed `SYN`, and the dirty cases real data has: empty content, exact and
near duplicates, HTML entities (some double-escaped), invisible and odd characters, very
long texts, plus a few malformed lines. Descriptions follow per-category patterns that
reuse the title's words, so a fine-tuned model can measurably learn them. Output bytes are
identical for identical arguments.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from pathlib import Path

import orjson
from isal import igzip

from lorapipe.core.cli import run_cli

BRANDS = ["Acme", "Northwind", "Bluepeak", "Solara", "Kestrel", "Everline", "Tidewater", "Ironbark", "Lumo", "Vantage"]
COLORS = ["Black", "White", "Navy Blue", "Forest Green", "Red", "Charcoal Gray", "Sky Blue", "Sand", "Purple", "Orange"]
MATERIALS = ["Stainless Steel", "Bamboo", "Recycled Plastic", "Aluminum", "Cotton", "Leather", "Ceramic", "Glass"]
CATEGORIES = {
    "water bottle": (
        "{brand} {material} Water Bottle, {size} ml, {color}",
        "Stay hydrated with the {brand} water bottle. Made of {material_l}, it holds {size} ml and comes in "
        "{color_l}. The leak-proof lid fits in any bag.",
        [1, 2, 3],
    ),
    "backpack": (
        "{brand} Travel Backpack {size}L - {color}",
        "The {brand} travel backpack offers {size} liters of space in a {color_l} finish. Padded straps and a "
        "laptop sleeve keep every trip comfortable.",
        [4, 5],
    ),
    "headphones": (
        "{brand} Wireless Headphones with {size}-Hour Battery ({color})",
        "Enjoy music all day with {brand} wireless headphones. The battery lasts {size} hours, and the {color_l} "
        "ear cups are soft and light.",
        [6, 7],
    ),
    "coffee mug": (
        "{brand} {material} Coffee Mug {size} oz {color}",
        "Start the morning with the {brand} coffee mug. This {material_l} mug holds {size} oz and its {color_l} "
        "glaze is dishwasher safe.",
        [8, 9],
    ),
    "yoga mat": (
        "{brand} Non-Slip Yoga Mat, {size} mm Thick, {color}",
        "The {brand} yoga mat is {size} mm thick for joint support. Its non-slip {color_l} surface grips the "
        "floor during every pose.",
        [10, 11],
    ),
    "desk lamp": (
        "{brand} LED Desk Lamp with {size} Brightness Levels, {color}",
        "Light up your desk with the {brand} LED lamp. Choose from {size} brightness levels; the {color_l} arm "
        "folds flat when not in use.",
        [12, 13],
    ),
    "novel": (
        "The {color} {noun}: A {genre} Novel",
        "A {genre_l} novel about {noun_l} and the people who chase it. Readers call The {color} {noun} a "
        "gripping story from the first page.",
        [14, 15],
    ),
    "running shoes": (
        "{brand} Men's Running Shoes Size {size} {color}",
        "Run farther in {brand} running shoes. Size {size}, {color_l}, with a breathable upper and a cushioned "
        "sole for long distances.",
        [16, 17],
    ),
}
NOUNS = ["Lighthouse", "Orchard", "Compass", "Harbor", "Winter", "Garden", "Letter", "Mountain", "River", "Promise"]
GENRES = ["Mystery", "Romance", "Fantasy", "Thriller", "Historical", "Science Fiction"]
EXTRAS = [
    "Backed by a one-year warranty.",
    "A thoughtful gift for friends and family.",
    "Designed and tested by our team.",
    "Ships in recyclable packaging.",
    "",
]
# Phrases with HTML entities as the real dump carries them, some escaped twice.
ENTITY_PHRASES = [
    "It&#8217;s built to last.",
    "It&amp;#8217;s built to last.",
    "Quality &#8211; guaranteed.",
    "Simple &amp; sturdy.",
    "A &quot;must-have&quot; item.",
]
ODD = ["\u200b", "\x07", "\u00a0", "\t", "\n", " \u2122", " \U0001f600", "\ufeff"]


def product(rng: random.Random) -> tuple[str, str, list[int]]:
    name = rng.choice(sorted(CATEGORIES))
    title_t, content_t, targets = CATEGORIES[name]
    v = {
        "brand": rng.choice(BRANDS),
        "color": rng.choice(COLORS),
        "material": rng.choice(MATERIALS),
        "size": rng.choice([6, 8, 10, 12, 20, 25, 30, 350, 500, 750, 1000]),
        "noun": rng.choice(NOUNS),
        "genre": rng.choice(GENRES),
    }
    v.update({f"{k}_l": str(val).lower() for k, val in list(v.items())})
    content = content_t.format(**v)
    extra = rng.choice(EXTRAS)
    return title_t.format(**v), f"{content} {extra}".strip(), targets


def dirty(rng: random.Random, text: str, entities: bool) -> str:
    """Sprinkle HTML entities and odd characters, as scraped product pages have."""
    if entities and rng.random() < 0.3:
        text = f"{text} {rng.choice(ENTITY_PHRASES)}"
    if rng.random() < 0.2:
        pos = rng.randrange(len(text) + 1)
        text = text[:pos] + rng.choice(ODD) + text[pos:]
    return text


def records(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    lines: list[bytes] = []
    made: list[dict] = []
    for i in range(n):
        uid = f"SYN{i:07d}"
        roll = rng.random()
        if roll < 0.04 and made:  # exact duplicate of an earlier record
            rec = dict(rng.choice(made), uid=uid)
        elif roll < 0.07 and made:  # same product, other casing/punctuation and another text
            prev = rng.choice(made)
            title = prev["title"].upper().replace(",", "")
            rec = {"uid": uid, "title": title, "content": product(rng)[1], "target_ind": [], "target_rel": []}
        else:
            title, content, targets = product(rng)
            if roll < 0.40:
                content = ""  # about 40% of real records have no description
            elif roll < 0.42:
                content = (content + " ") * rng.randint(40, 80)  # very long text
            elif roll < 0.43:
                title = title + " " + "Extra Long Title Words " * 20
            rec = {
                "uid": uid,
                "title": dirty(rng, title, entities=False),
                "content": dirty(rng, content, entities=True) if content else "",
                "target_ind": targets,
                "target_rel": [1.0] * len(targets),
            }
        made.append(rec)
        lines.append(json.dumps(rec, ensure_ascii=rng.random() < 0.5).encode() + b"\n")
    # A few malformed lines, spread through the file: real dumps get cut, re-encoded and hand-edited.
    malformed = [
        b'{"uid": "SYNBAD0001", "title": "Broken line", "content": "no closing brace"\n',
        b'{"uid": "SYNBAD0002", "title": "Latin-1 caf\xe9 mug", "content": "Not UTF-8 \xe9 bytes"}\n',
        b'["SYNBAD0003", "an array", "not an object"]\n',
        b'{"uid": "SYNBAD0004", "title": 12345, "content": "title is a number"}\n',
        b'{"uid": "SYNBAD0005", "title": "Missing content field"}\n',
        b"\n",
    ]
    for j, bad in enumerate(malformed):
        lines.insert((j + 1) * len(lines) // (len(malformed) + 1), bad)
    return lines


def dump_shaped(path: Path, records: int, seed: int = 0) -> None:
    """`records` lines shaped like the real dump at any size, for timing the data stages: ~46% empty content,
    long-tailed description lengths, random words (not the products `main` writes)."""
    rng = random.Random(seed)
    words = ["".join(rng.choices("abcdefghijklmnoprstuvwy", k=rng.randint(2, 10))) for _ in range(5000)]
    entities = ["&#8217;", "&amp;", "&#8211;", "&quot;"]
    with igzip.open(path, "wb", compresslevel=1) as f:
        for i in range(records):
            title = " ".join(rng.choices(words, k=rng.randint(3, 16))).title()
            if rng.random() < 0.46:
                content = ""
            else:
                n = min(int(rng.lognormvariate(3.9, 0.9)), 2000)  # words; median ~50
                content = " ".join(rng.choices(words, k=max(n, 1)))
                if rng.random() < 0.3:
                    content += " It" + rng.choice(entities) + "s great."
            if rng.random() < 0.03 and i:  # repeated titles
                title = title.split()[0] + " Duplicate"
            labels = rng.sample(range(1_305_265), rng.randint(1, 6))  # the dump's label columns, parsed and unused
            record = {"uid": f"{i:010d}", "title": title, "content": content}
            record |= {"target_ind": labels, "target_rel": [1.0] * len(labels)}
            f.write(orjson.dumps(record) + b"\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    # mtime=0 and no file name in the header: identical bytes, hence a stable sha256.
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", filename="", mtime=0) as gz:
        gz.writelines(records(args.records, args.seed))
    tmp.replace(args.out)
    print(f"wrote {args.out} ({args.records:,} synthetic records + malformed lines)")


if __name__ == "__main__":
    run_cli(main)
