"""Item embeddings: a Flax BERT sentence encoder and the `embed` stage."""
