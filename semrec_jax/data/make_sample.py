r"""Regenerates the bundled sample (semrec_jax/data/sample) from the Games benchmark files.

  python -m semrec_jax.data.make_sample --source=/path/to/amazon18_games \
      --out=semrec_jax/data/sample [--num_items=2000 --min_length=5]

Keeps the `num_items` most-interacted items (ties by ASIN) and the users left with at least
`min_length` of them; files keep the source layout, so the `games_tsv` reader reads both.
"""

import collections
import csv
import gzip
import io
import os

from absl import app, flags

from semrec_jax.data.files import open_text

_SOURCE = flags.DEFINE_string("source", None, "Folder with the Games benchmark files.")
_OUT = flags.DEFINE_string("out", None, "Output folder.")
_NUM_ITEMS = flags.DEFINE_integer("num_items", 2000, "Items to keep.")
_MIN_LENGTH = flags.DEFINE_integer("min_length", 5, "Minimum kept items per user.")

NOTICE = """# Bundled sample of the Amazon 2018 Video_Games 5-core ("Games") benchmark

A real subset for the default run and the tests: the {num_items} most-interacted items and the
{num_users} users with at least {min_length} interactions among them ({num_interactions} interactions).
Regenerate with `python -m semrec_jax.data.make_sample --source=/path/to/amazon18_games
--out=semrec_jax/data/sample`.

Source: Amazon Review Data (2018), J. Ni, J. Li, J. McAuley, "Justifying recommendations using
distantly-labeled reviews and fine-grained aspects", EMNLP 2019; benchmark processing as in Hou et al.
2022 (UniSRec) and Zheng et al. 2024 (LC-Rec). items_2023_llm_attrs.csv holds attributes an LLM
extracted from the Amazon Reviews 2023 metadata (Hou et al. 2024). Licence: research use only; the data
owners state no open licence. Do not redistribute outside research use.
"""


def _write_gzip(path: str, text: str) -> None:
  with open(path, "wb") as raw:  # mtime=0 keeps the bytes reproducible
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
      f.write(text.encode("utf-8"))


def _filter_csv(path: str, key: str, keep: set[str]) -> str:
  out = io.StringIO()
  with open_text(path) as f:
    reader = csv.DictReader(f)
    writer = csv.DictWriter(out, fieldnames=reader.fieldnames, lineterminator="\n")
    writer.writeheader()
    writer.writerows(row for row in reader if row[key] in keep)
  return out.getvalue()


def main(argv):
  del argv
  source, out = _SOURCE.value, _OUT.value
  with open_text(os.path.join(source, "sequences.tsv.gz")) as f:
    lines = [line.rstrip("\n").split("\t") for line in f][1:]
  counts = collections.Counter(a for _, asins in lines for a in asins.split())
  ranked = sorted(counts, key=lambda a: (-counts[a], a))
  keep = set(ranked[:_NUM_ITEMS.value])
  rows = ["user_id\tasins"]
  for user, asins in lines:
    kept = [a for a in asins.split() if a in keep]
    if len(kept) >= _MIN_LENGTH.value:
      rows.append(f"{user}\t{' '.join(kept)}")
  os.makedirs(out, exist_ok=True)
  _write_gzip(os.path.join(out, "sequences.tsv.gz"), "\n".join(rows) + "\n")
  _write_gzip(os.path.join(out, "items.csv.gz"),
              _filter_csv(os.path.join(source, "items.csv.gz"), "asin", keep))
  _write_gzip(os.path.join(out, "items_2023_llm_attrs.csv.gz"),
              _filter_csv(os.path.join(source, "items_2023_llm_attrs.csv.gz"), "parent_asin", keep))
  with open(os.path.join(out, "NOTICE.md"), "w") as f:
    f.write(NOTICE.format(num_items=len(keep), num_users=len(rows) - 1,
                          min_length=_MIN_LENGTH.value,
                          num_interactions=sum(len(r.split("\t")[1].split()) for r in rows[1:])))


if __name__ == "__main__":
  flags.mark_flags_as_required(["source", "out"])
  app.run(main)
