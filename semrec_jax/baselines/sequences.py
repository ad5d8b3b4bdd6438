"""Fixed-shape SASRec rows from the leave-one-out splits (left-padded, newest item last).

A training row is the user's training sequence (the train split's history + target, which never
holds a validation or test item) shifted by one: inputs[t] predicts targets[t]. An evaluation row
is a split's history, whose next item is that split's target.
"""

import numpy as np

IGNORE = -1  # target of a padded position


def _left_pad(values: list[int], length: int, pad: int) -> np.ndarray:
  row = np.full(length, pad, np.int32)
  if values:
    row[length - len(values):] = values
  return row


def train_rows(records: list[dict], num_items: int, max_len: int) -> tuple[np.ndarray, np.ndarray]:
  """(inputs, targets), each [users, max_len]; padding is item `num_items` / target IGNORE."""
  inputs = np.empty((len(records), max_len), np.int32)
  targets = np.empty((len(records), max_len), np.int32)
  for u, r in enumerate(records):
    sequence = [int(i) for i in r["history"]] + [int(r["target"])]
    sequence = sequence[-(max_len + 1):]
    inputs[u] = _left_pad(sequence[:-1], max_len, num_items)
    targets[u] = _left_pad(sequence[1:], max_len, IGNORE)
  return inputs, targets


def history_rows(records: list[dict], num_items: int, max_len: int) -> np.ndarray:
  """[users, max_len]: each record's last max_len history items, padded with `num_items`."""
  return np.stack([_left_pad([int(i) for i in r["history"]][-max_len:], max_len, num_items)
                   for r in records])
