"""Scoring base and tuned models: BLEU, ROUGE, perplexity, output health, and the per-sample files."""
