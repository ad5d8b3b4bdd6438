"""Models: the decoder LLM (Gemma 3, Llama/Qwen3 families), its weight import, and SASRec."""
