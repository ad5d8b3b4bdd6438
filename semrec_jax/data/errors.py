"""Bad-input accounting shared by every reader.

Readers never drop a row silently: each rejected line is counted under a reason, the first few are
kept with file and line number for the error message, and a file whose bad share exceeds
`max_bad_fraction` fails the run.
"""

import collections
import dataclasses

from absl import logging

_EXAMPLES_KEPT = 5


class DataError(ValueError):
  """Input data that cannot be used as given (missing file, bad layout, too many bad lines)."""


@dataclasses.dataclass
class BadLines:
  """Counts rejected input lines by reason for one file."""

  path: str
  max_bad_fraction: float
  total: int = 0
  counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  examples: list = dataclasses.field(default_factory=list)

  def add(self, line_number: int, reason: str, detail: str = "") -> None:
    self.counts[reason] += 1
    if len(self.examples) < _EXAMPLES_KEPT:
      where = f"{self.path}:{line_number}"
      self.examples.append(f"{where}: {reason}" + (f" ({detail})" if detail else ""))
      logging.warning("bad input at %s: %s %s", where, reason, detail)

  @property
  def bad(self) -> int:
    return sum(self.counts.values())

  def check(self) -> None:
    """Raises DataError when the bad share of this file exceeds the allowed fraction."""
    if self.total and self.bad / self.total > self.max_bad_fraction:
      raise DataError(
          f"{self.path}: {self.bad} of {self.total} lines are bad "
          f"({self.bad / self.total:.2%} > max_bad_fraction={self.max_bad_fraction}); "
          f"by reason {dict(self.counts)}; first: " + "; ".join(self.examples))
    if self.bad:
      logging.warning("%s: skipped %d of %d lines: %s", self.path, self.bad, self.total,
                      dict(self.counts))


class DropLog(collections.Counter):
  """Everything removed on the way from raw files to the dataset, by reason (goes to stats.json)."""

  def merge_bad_lines(self, bad: BadLines) -> None:
    for reason, n in bad.counts.items():
      self[f"bad_line:{reason}"] += n
