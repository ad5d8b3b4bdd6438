"""Semantic IDs: a residual-quantization autoencoder (RQ-VAE), its training and code assignment."""
