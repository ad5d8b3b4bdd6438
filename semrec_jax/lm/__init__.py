"""The LM side: the tokenizer with semantic-ID tokens, the task builders and their phrasing, the
grain input pipeline, the loss, the trainer, the `lm` stage, and decoding (constrained beam search)."""
