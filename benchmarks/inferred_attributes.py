r"""Attribute values read from nearest items (semrec_jax/chat/neighbours.py): held-out precision
and coverage per kind, and the time to infer every kind; prints one JSON line.

  python benchmarks/inferred_attributes.py --workdir=W   # W: a workdir after prepare and embed

A quarter of the known items of each kind (with a value, or described: Catalog.described) is made
unknown and inferred from the rest: coverage is the share of those with a value given one,
precision the share of the values given that the catalog confirms.
"""

import json
import math
import os
import time

from absl import app, flags

from semrec_jax import backend
from semrec_jax.chat import neighbours
from semrec_jax.chat.items import KINDS, Catalog
from semrec_jax.chat.recommender import item_embeddings
from semrec_jax.data import tfds_builders

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir with data/ and embeddings/.")
_K = flags.DEFINE_integer("k", neighbours.K, "Nearest items that vote.")
_SHARE = flags.DEFINE_float("share", neighbours.SHARE, "Share of them that must agree.")


def _rounded(x: float) -> float | None:
  return None if math.isnan(x) else round(x, 3)  # None: too few known items to hold out


def main(argv):
  del argv
  catalog = Catalog(tfds_builders.items_source(os.path.join(_WORKDIR.value, "data")))
  vectors = item_embeddings(_WORKDIR.value, catalog)
  if vectors is None:
    raise SystemExit(f"error: no embeddings in {_WORKDIR.value}: run the embed stage first")
  catalog.use_embeddings(vectors)
  out = {"items": len(catalog), "k": _K.value, "share": _SHARE.value}
  for kind in KINDS:
    with_value = sum(bool(v) for v in catalog.values[kind])
    scores = neighbours.held_out(catalog.values[kind], vectors, catalog.described(kind),
                                 k=_K.value, share=_SHARE.value)
    out[kind] = {"with_value": round(with_value / len(catalog), 3), "hidden": scores["hidden"],
                 "coverage": _rounded(scores["coverage"]),
                 "precision": _rounded(scores["precision"])}
  start = time.perf_counter()
  given = {kind: sum(bool(v) for v in catalog.inferred(kind)) for kind in KINDS}
  out["infer_all_s"] = round(time.perf_counter() - start, 2)
  out["given"] = given  # items the catalog gives no value of a kind that now have one
  print(json.dumps(out))


if __name__ == "__main__":
  flags.mark_flag_as_required("workdir")
  backend.choose()
  app.run(main)
