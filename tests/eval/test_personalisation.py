"""How personal the top-10 lists are: pairwise Jaccard, catalog coverage and the popular items'
share, on hand-built lists and against a direct pairwise computation."""

import itertools

import numpy as np
import pytest

from semrec_jax.protocol import personalisation, popularity

JACCARD, COVERAGE, POPULAR = personalisation.KEYS


def _direct_jaccard(lists):
  sets = [set(r) for r in lists]
  return np.mean([len(a & b) / len(a | b) for a, b in itertools.combinations(sets, 2)])


def test_one_list_for_everyone_is_jaccard_one_and_disjoint_lists_zero():
  counts = np.arange(40)[::-1]  # item 0 the most bought
  same = np.tile(np.arange(10), (5, 1))
  found = personalisation.list_personalisation(same, counts)
  assert found[JACCARD] == 1.0 and found[COVERAGE] == 10 / 40
  disjoint = np.arange(40).reshape(4, 10)
  found = personalisation.list_personalisation(disjoint, counts)
  assert found[JACCARD] == 0.0 and found[COVERAGE] == 1.0


def test_jaccard_equals_the_direct_pairwise_mean_and_ignores_invalid_entries():
  rng = np.random.default_rng(0)
  lists = np.stack([rng.choice(30, 10, replace=False) for _ in range(25)])
  assert personalisation.pairwise_jaccard(lists, 30) == pytest.approx(_direct_jaccard(lists))
  padded = np.concatenate([lists, np.full((25, 2), -1)], axis=1)[:, 2:]  # -1 = no item
  kept = [[i for i in row if i >= 0] for row in padded]
  assert personalisation.pairwise_jaccard(padded, 30) == pytest.approx(_direct_jaccard(kept))
  assert personalisation.pairwise_jaccard(lists[:1], 30) is None


def test_popular_share_counts_slots_held_by_the_most_bought_training_items():
  counts = np.zeros(500, np.int64)
  counts[400:] = 1000 - np.arange(100)  # items 400..499 are the 100 most bought
  assert set(popularity.ranking(counts, personalisation.POPULAR)) == set(range(400, 500))
  lists = np.array([[400 + i for i in range(7)] + [1, 2, 3],
                    [5 + i for i in range(10)]])
  assert personalisation.list_personalisation(lists, counts)[POPULAR] == pytest.approx(7 / 20)


def test_many_users_are_read_on_a_fixed_subset_of_the_same_size():
  rng = np.random.default_rng(1)
  lists = np.stack([rng.choice(1000, 10, replace=False) for _ in range(2000)])
  counts = rng.integers(0, 50, 1000)
  first = personalisation.list_personalisation(lists, counts, seed=3)
  assert first == personalisation.list_personalisation(lists, counts, seed=3)
  subset = personalisation._subset(lists, 3)  # pylint: disable=protected-access
  assert subset.shape == (personalisation.USERS, 10)
  assert first[COVERAGE] == len(np.unique(subset)) / 1000
