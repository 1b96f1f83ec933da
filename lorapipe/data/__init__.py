"""The data stages' code: download, cleaning, dedup/sample/split, token lengths, the prompt format and packing."""
