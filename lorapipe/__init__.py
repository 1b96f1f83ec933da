"""lorapipe: a DVC pipeline that fine-tunes a small LLM with QLoRA to describe products from titles."""
