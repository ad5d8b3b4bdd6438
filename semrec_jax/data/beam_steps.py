"""The Beam graphs of the `prepare` pipelines (driven by `beam_prepare`), and their per-record and
per-group functions. Each function sees one file, one user or one item; the parsing, cleaning,
k-core thresholds and leave-one-out are the in-process path's own functions."""

import json

import apache_beam as beam

from semrec_jax.data import tfds_builders
from semrec_jax.data.catalog import FIELDS, fill_row, make_row
from semrec_jax.data.errors import BadLines
from semrec_jax.data.processing import user_examples

_BUCKET_LINES = 1 << 16  # input lines per bucket of the dense rank (bounds one group's size)


# ---- 1. read: parse, dedupe per user, join the catalog per item ----


def read(p, plan, max_bad_fraction: float):
  files = [("interactions", i, path) for i, path in enumerate(plan.interaction_files)]
  files.append(("catalog", 0, plan.catalog_file))
  if plan.attribute_file:
    files.append(("attributes", 0, plan.attribute_file))
  parsed = (p | "Files" >> beam.Create(files)
            | "Reshuffle" >> beam.Reshuffle()  # one file per worker
            | "Parse" >> beam.FlatMap(_parse_file, plan, max_bad_fraction).with_outputs(
                "bad", "catalog", "attributes", main="interactions"))
  deduped = (parsed.interactions | "GroupByUser" >> beam.GroupByKey()
             | "Dedupe" >> beam.FlatMap(_dedupe_user).with_outputs("drops", main="rows"))
  joined = ({"rows": deduped.rows, "catalog": parsed.catalog, "attributes": parsed.attributes}
            | "GroupByItem" >> beam.CoGroupByKey()
            | "JoinCatalog" >> beam.FlatMap(_join_item, plan.catalog_only_interacted).with_outputs(
                "drops", "catalog", main="rows"))
  drops = (deduped.drops, joined.drops) | "FlattenDrops" >> beam.Flatten()
  return joined.rows, joined.catalog, parsed.bad, drops


def _parse_file(file, plan, max_bad_fraction: float):
  """Runs one file through its parser (the one the in-process path uses)."""
  kind, index, path = file
  bad = BadLines(path, max_bad_fraction)
  if kind == "interactions":
    for line, position, user, item, timestamp in plan.parse_interactions(path, bad):
      yield user, (item, timestamp, (index, line, position))
  elif kind == "catalog":
    for line, item, fields, unparsed_price in plan.parse_catalog(path, bad):
      yield beam.pvalue.TaggedOutput("catalog", (item, (line, make_row(fields), unparsed_price)))
  else:
    for line, item, fields in plan.parse_attributes(path, bad):
      yield beam.pvalue.TaggedOutput("attributes", (item, (line, fields)))
  yield beam.pvalue.TaggedOutput("bad", {"kind": kind, "index": index, "path": path,
                                         "total": bad.total, "counts": dict(bad.counts),
                                         "examples": bad.examples})


def _dedupe_user(user_rows):
  """A user's rows in chronological order (ties: place in the input), first of each item kept."""
  user, rows = user_rows
  rows = sorted(rows, key=lambda r: (r[1], r[2]))
  first = min(r[2] for r in rows)  # first appearance in the input: the user's number
  seen = set()
  for item, timestamp, order in rows:
    if item not in seen:
      seen.add(item)
      yield item, (user, timestamp, order, first)
  yield beam.pvalue.TaggedOutput("drops", ("read/interactions", len(rows)))
  yield beam.pvalue.TaggedOutput("drops", ("duplicate_interactions", len(rows) - len(seen)))


def _join_item(item_groups, catalog_only_interacted: bool):
  """One item: its catalog row (first of its rows, side attributes filled in file order) and its
  interactions, dropped with a count when the item is missing or untitled."""
  item, groups = item_groups
  rows = list(groups["rows"])
  if catalog_only_interacted and not rows:
    return  # an item nobody interacted with: not part of the dataset, nothing counted
  entries = sorted(groups["catalog"], key=lambda e: e[0])
  attributes = sorted(groups["attributes"], key=lambda e: e[0])
  counts = {"duplicate_item_rows": max(0, len(entries) - 1),
            "unparsed_price": sum(1 for e in entries if e[2])}
  if entries:
    line, row, _ = entries[0]
    row = dict(row)
    for _, fields in attributes:
      fill_row(row, fields)
  else:
    counts["attribute_rows_for_unknown_items"] = len(attributes)
    row = None
  if rows and row is None:
    counts["items_missing_from_catalog"] = 1
    counts["interactions_on_items_missing_from_catalog"] = len(rows)
  elif rows and not row["title"]:
    counts["items_without_title"] = 1
    counts["interactions_on_items_without_title"] = len(rows)
  elif rows:
    yield beam.pvalue.TaggedOutput("catalog", [item, line, row])
    for user, timestamp, order, first in rows:
      yield user, item, timestamp, order, first
  for name, n in counts.items():
    if n:
      yield beam.pvalue.TaggedOutput("drops", (name, n))


# ---- 2. k-core: rounds of (count per user, count per item) until nothing is removed ----


def kcore(rows, first_round: int, rounds: int, user_min: int, item_min: int):
  stats = []
  for r in range(first_round, first_round + rounds):
    by_user = (rows | f"KeyByUser{r}" >> beam.Map(lambda row: (row[0], row))
               | f"GroupByUser{r}" >> beam.GroupByKey()
               | f"CountUser{r}" >> beam.FlatMap(_mark_user, user_min, r).with_outputs(
                   "stats", main="rows"))
    by_item = (by_user.rows | f"GroupByItem{r}" >> beam.GroupByKey()
               | f"CountItem{r}" >> beam.FlatMap(_filter_item, item_min, r).with_outputs(
                   "stats", main="rows"))
    rows = by_item.rows
    stats += [by_user.stats, by_item.stats]
  return rows, tuple(stats) | f"FlattenKcoreStats{first_round}" >> beam.Flatten()


def _mark_user(user_rows, user_min: int, r: int):
  _, rows = user_rows
  rows = list(rows)
  weak = len(rows) < user_min
  for row in rows:
    yield row[1], (row, weak)
  yield beam.pvalue.TaggedOutput("stats", (f"round{r}/users", 1))
  yield beam.pvalue.TaggedOutput("stats", (f"round{r}/rows", len(rows)))


def _filter_item(item_rows, item_min: int, r: int):
  _, marked = item_rows  # re-iterable: counted first, then streamed (a popular item's rows)
  weak_item = sum(1 for _ in marked) < item_min
  removed = 0
  for row, weak_user in marked:
    if weak_user or weak_item:
      removed += 1
    else:
      yield row
  yield beam.pvalue.TaggedOutput("stats", (f"round{r}/items", 1))
  yield beam.pvalue.TaggedOutput("stats", (f"round{r}/removed", removed))


# ---- 3. assemble: number items and users, leave-one-out per user ----


def assemble(p, rows_prefix: str, catalog_prefix: str, work: str, max_history: int):
  rows = p | "ReadRows" >> ReadRows(rows_prefix)
  catalog = (p | "ReadCatalog" >> beam.io.ReadFromText(shards(catalog_prefix))
             | "ParseCatalog" >> beam.Map(json.loads)
             | "KeyCatalog" >> beam.Map(lambda e: (e[0], (e[1], e[2]))))
  item_counts = (rows | "ItemOnes" >> beam.Map(lambda row: (row[1], 1))
                 | "CountPerItem" >> beam.CombinePerKey(sum))
  items = ({"count": item_counts, "catalog": catalog} | "JoinUsedItems" >> beam.CoGroupByKey()
           | "UsedItems" >> beam.FlatMap(_used_item))  # (item, (catalog line, row, count))
  item_index = (items | "ItemOrder" >> beam.Map(lambda kv: (kv[0], (0, kv[1][0], 0)))
                | "RankItems" >> _DenseRank())
  numbered = ({"entry": items, "index": item_index} | "JoinItemIndex" >> beam.CoGroupByKey()
              | "CatalogRows" >> beam.FlatMap(_catalog_row).with_outputs("stats", main="rows"))
  write_jsonl(numbered.rows, _path(work, "items"), "Items")

  user_index = (rows | "UserOrder" >> beam.Map(lambda row: (row[0], row[4]))
                | "DistinctUsers" >> beam.Distinct() | "RankUsers" >> _DenseRank())
  indexed = ({"rows": rows | "KeyRowsByItem" >> beam.Map(lambda row: (row[1], row)),
              "index": item_index}
             | "JoinRowItems" >> beam.CoGroupByKey()
             | "IndexItems" >> beam.FlatMap(_index_rows))
  examples = ({"rows": indexed, "index": user_index} | "JoinUserIndex" >> beam.CoGroupByKey()
              | "LeaveOneOut" >> beam.FlatMap(_user_examples, max_history).with_outputs(
                  "stats", *tfds_builders.SPLITS))
  for split in tfds_builders.SPLITS:
    write_jsonl(examples[split], _path(work, f"examples-{split}"), f"Examples_{split}")
  sums = (numbered.stats, examples.stats) | "FlattenAssembleStats" >> beam.Flatten()
  write_counts(sums, _path(work, "assemble.json"), "Assemble")
  minimum = (item_counts | "CountsOnly" >> beam.Map(lambda kv: ("item_interactions", kv[1]))
             | "MinCount" >> beam.CombinePerKey(min))
  write_json(minimum | "MinList" >> beam.combiners.ToList() | "MinDict" >> beam.Map(dict),
              _path(work, "assemble_min.json"), "AssembleMin")


def _used_item(item_groups):
  item, groups = item_groups
  counts, entries = list(groups["count"]), list(groups["catalog"])
  if counts and entries:
    yield item, (entries[0][0], entries[0][1], counts[0])


def _catalog_row(item_groups):
  item, groups = item_groups
  (index,) = groups["index"]
  ((_, row, _),) = groups["entry"]
  yield [index, item, row]
  yield beam.pvalue.TaggedOutput("stats", ("items", 1))
  for name in FIELDS:
    if row[name]:
      yield beam.pvalue.TaggedOutput("stats", (f"filled/{name}", 1))


def _index_rows(item_groups):
  _, groups = item_groups
  (index,) = groups["index"]
  for user, _, timestamp, order, _ in groups["rows"]:
    yield user, (index, timestamp, order)


def _user_examples(user_groups, max_history: int):
  user, groups = user_groups
  (user_index,) = groups["index"]
  rows = sorted(groups["rows"], key=lambda r: (r[1], r[2]))
  items, timestamps = [r[0] for r in rows], [r[1] for r in rows]
  for split, example in user_examples(user_index, user, items, timestamps, max_history):
    example["history"] = example["history"].tolist()
    yield beam.pvalue.TaggedOutput(split, example)
  for name, n in (("users", 1), ("interactions", len(rows)), (f"length/{len(rows)}", 1)):
    yield beam.pvalue.TaggedOutput("stats", (name, n))


class _DenseRank(beam.PTransform):
  """(key, sort key) -> (key, rank of its sort key): 0, 1, 2, ... without one worker seeing all.

  Sort keys are (file, line, position) places in the input; a bucket holds the keys of
  `_BUCKET_LINES` lines (one user or item per line at most), counts per bucket give each bucket's
  first rank, and a bucket is sorted alone.
  """

  def expand(self, pcoll):
    keyed = pcoll | "Bucket" >> beam.Map(lambda kv: (_bucket(kv[1]), (kv[0], tuple(kv[1]))))
    offsets = (keyed | "CountPerBucket" >> beam.combiners.Count.PerKey()
               | "AllBuckets" >> beam.combiners.ToList() | "Offsets" >> beam.Map(_offsets))
    return (keyed | "GroupBucket" >> beam.GroupByKey()
            | "RankInBucket" >> beam.FlatMap(_rank_bucket, beam.pvalue.AsSingleton(offsets)))


def _bucket(place) -> tuple[int, int]:
  return int(place[0]), int(place[1]) // _BUCKET_LINES


def _offsets(bucket_counts) -> dict:
  offsets, total = {}, 0
  for bucket, n in sorted(bucket_counts):
    offsets[bucket] = total
    total += n
  return offsets


def _rank_bucket(bucket_members, offsets: dict):
  bucket, members = bucket_members
  for rank, (key, _) in enumerate(sorted(members, key=lambda m: m[1]), start=offsets[bucket]):
    yield key, rank


# ---- files between the runs ----


class ReadRows(beam.PTransform):
  def __init__(self, prefix: str):
    super().__init__()
    self._prefix = prefix

  def expand(self, pbegin):
    return (pbegin | "Read" >> beam.io.ReadFromText(shards(self._prefix))
            | "Parse" >> beam.Map(_row_from_json))


def _row_from_json(line: str):
  user, item, timestamp, order, first = json.loads(line)
  return user, item, timestamp, tuple(order), tuple(first)


def shards(prefix: str) -> str:
  """The files `write_jsonl(..., prefix)` wrote ("rows-1" must not match "rows-10-...")."""
  return prefix + "-*"


def write_rows(rows, prefix: str, label: str):
  write_jsonl(rows, prefix, f"Rows{label}")


def write_jsonl(pcoll, prefix: str, label: str):
  return (pcoll | f"ToJson{label}" >> beam.Map(lambda x: json.dumps(x, ensure_ascii=False))
          | f"Write{label}" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl"))


def write_counts(pairs, path: str, label: str):
  """Sums (name, n) pairs per name into one JSON object file."""
  summed = (pairs | f"Sum{label}" >> beam.CombinePerKey(sum)
            | f"List{label}" >> beam.combiners.ToList() | f"Dict{label}" >> beam.Map(dict))
  write_json(summed, path, label)


def write_json(single, path: str, label: str):
  (single | f"Json{label}" >> beam.Map(lambda x: json.dumps(x, ensure_ascii=False, sort_keys=True))
   | f"WriteJson{label}" >> beam.io.WriteToText(path, shard_name_template=""))


def _path(folder: str, name: str) -> str:
  return beam.io.filesystems.FileSystems.join(folder, name)

