"""LM side: tokenizers (and, later, task builders, the grain pipeline and the trainer)."""
