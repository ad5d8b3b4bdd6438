"""Interactions held as compact numpy columns, built by streaming appends.

Memory grows with the number of rows as four machine integers each (user, item, timestamp, file
order), plus one dict entry per distinct user and item string.
"""

import array
import dataclasses

import numpy as np


@dataclasses.dataclass
class Interactions:
  """Columnar (user, item, timestamp) rows; `order` is the row's position in the input files."""

  user: np.ndarray       # int32 index into user_ids
  item: np.ndarray       # int32 index into item_ids
  timestamp: np.ndarray  # int64, any unit that orders events
  order: np.ndarray      # int64, stable tie-break: position in the input
  user_ids: list[str]
  item_ids: list[str]

  def __len__(self) -> int:
    return len(self.user)

  def select(self, mask_or_index: np.ndarray) -> "Interactions":
    """Rows picked by a boolean mask or an index array; vocabularies are kept."""
    return Interactions(self.user[mask_or_index], self.item[mask_or_index],
                        self.timestamp[mask_or_index], self.order[mask_or_index],
                        self.user_ids, self.item_ids)


class InteractionBuffer:
  """Streaming builder for `Interactions`: interns ids and appends to typed arrays."""

  def __init__(self):
    self._users: dict[str, int] = {}
    self._items: dict[str, int] = {}
    self._user = array.array("i")
    self._item = array.array("i")
    self._timestamp = array.array("q")

  def item_index(self, item_id: str) -> int:
    index = self._items.get(item_id)
    if index is None:
      index = self._items[item_id] = len(self._items)
    return index

  def add(self, user_id: str, item_id: str, timestamp: int) -> None:
    user = self._users.get(user_id)
    if user is None:
      user = self._users[user_id] = len(self._users)
    self._user.append(user)
    self._item.append(self.item_index(item_id))
    self._timestamp.append(timestamp)

  @property
  def item_vocab(self) -> dict[str, int]:
    return self._items

  def __len__(self) -> int:
    return len(self._user)

  def build(self) -> Interactions:
    n = len(self._user)
    return Interactions(
        user=np.frombuffer(self._user, dtype=np.int32).copy(),
        item=np.frombuffer(self._item, dtype=np.int32).copy(),
        timestamp=np.frombuffer(self._timestamp, dtype=np.int64).copy(),
        order=np.arange(n, dtype=np.int64),
        user_ids=list(self._users), item_ids=list(self._items))
