"""Evaluation of a trained LM: restore from Orbax, rank with constrained decoding, measure."""
