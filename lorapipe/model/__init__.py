"""Loading the base model and making it trainable, the decoding settings, generation, and export to GGUF."""
