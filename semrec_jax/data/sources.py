"""What a reader reads: its files and one per-record parser for each, shared by both prepare paths.

Every format (amazon2023, games_tsv, generic) describes itself as a `Plan`: which files hold the
interactions, the catalog and optional side attributes, and a generator per kind of file that turns
one file into parsed records, counting bad lines in a `BadLines`. The in-process path
(`read_local`) and the Beam pipeline (`semrec_jax.data.beam`) both consume these generators, so each
parsing and cleaning rule exists once.

Records:
  interactions  (line_number, position_in_line, user_id, item_id, timestamp)
  catalog       (line_number, item_id, fields: dict of raw field values, unparsed_price: bool)
  attributes    (line_number, item_id, fields) that fill empty catalog fields of a known item
An interaction's place in the input is (file index, line_number, position_in_line): the stable
tie-break of the chronological order and what "first appearance" of a user means.
"""

import dataclasses
from typing import Callable, Iterator

from semrec_jax.data.catalog import Catalog, CatalogBuilder
from semrec_jax.data.errors import BadLines, DropLog
from semrec_jax.data.interactions import InteractionBuffer, Interactions

InteractionRecord = tuple[int, int, str, str, int]
CatalogRecord = tuple[int, str, dict, bool]
AttributeRecord = tuple[int, str, dict]


@dataclasses.dataclass(frozen=True)
class Plan:
  """The files of one dataset and the parser of each kind of file."""

  interaction_files: tuple[str, ...]
  parse_interactions: Callable[[str, BadLines], Iterator[InteractionRecord]]
  catalog_file: str
  parse_catalog: Callable[[str, BadLines], Iterator[CatalogRecord]]
  attribute_file: str | None = None
  parse_attributes: Callable[[str, BadLines], Iterator[AttributeRecord]] | None = None
  # amazon2023: the meta file covers the whole category; rows of items nobody interacted with are
  # skipped before anything is counted (duplicates, unparsed prices).
  catalog_only_interacted: bool = False
  catalog_first: bool = False  # read order of the in-process path (which file's error comes first)


def read_local(plan: Plan, max_bad_fraction: float) -> tuple[Catalog, Interactions, DropLog]:
  """The in-process reader: every file streamed once into compact columns."""
  drops = DropLog()
  buffer = InteractionBuffer()
  builder = CatalogBuilder()

  def read_interactions():
    for path in plan.interaction_files:
      bad = BadLines(path, max_bad_fraction)
      for _, _, user, item, timestamp in plan.parse_interactions(path, bad):
        buffer.add(user, item, timestamp)
      bad.check()
      drops.merge_bad_lines(bad)

  def read_catalog():
    wanted = buffer.item_vocab if plan.catalog_only_interacted else None
    bad = BadLines(plan.catalog_file, max_bad_fraction)
    for _, item_id, fields, unparsed_price in plan.parse_catalog(plan.catalog_file, bad):
      if wanted is not None and item_id not in wanted:
        continue  # an item nobody interacted with: not part of the dataset
      if unparsed_price:
        drops["unparsed_price"] += 1  # the item stays, without a price
      builder.add(item_id, **fields)
    bad.check()
    drops.merge_bad_lines(bad)
    if plan.attribute_file:
      bad = BadLines(plan.attribute_file, max_bad_fraction)
      for _, item_id, fields in plan.parse_attributes(plan.attribute_file, bad):
        if item_id in builder:
          builder.update(item_id, **fields)
        else:
          drops["attribute_rows_for_unknown_items"] += 1
      bad.check()
      drops.merge_bad_lines(bad)
    drops["duplicate_item_rows"] += builder.duplicates

  for step in ((read_catalog, read_interactions) if plan.catalog_first
               else (read_interactions, read_catalog)):
    step()
  return builder.build(), buffer.build(), drops
