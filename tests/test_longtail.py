"""Long-tail profile, subset selection (against an independent LDAM-DRW reimplementation) and validation split."""

from __future__ import annotations

import numpy as np
import pytest

from refcal_zoo.data import indices_sha256, longtail_counts, make_longtail_split, shot_group
from refcal_zoo.errors import DataError


@pytest.mark.parametrize(
    ("n_max", "k", "rho", "total"),
    [(5000, 10, 10, 20_431), (5000, 10, 50, 13_996), (5000, 10, 100, 12_406),
     (500, 100, 10, 19_573), (500, 100, 50, 12_608), (500, 100, 100, 10_847)],
)
def test_published_totals(n_max, k, rho, total):
    assert sum(longtail_counts(n_max, k, rho)) == total


def test_cifar10_rho10_profile_and_cifar100_tails():
    assert longtail_counts(5000, 10, 10) == [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]
    assert longtail_counts(500, 100, 100)[-5:] == [6, 5, 5, 5, 5]
    assert longtail_counts(500, 100, 10)[-1] == 50
    assert longtail_counts(7, 1, 10) == [7]
    assert longtail_counts(300, 5, 1) == [300] * 5


def test_shot_groups_cifar100lt():
    groups = [shot_group(n) for n in longtail_counts(500, 100, 100)]
    assert (groups.count("many"), groups.count("medium"), groups.count("few")) == (35, 35, 30)


def ldam_reference(labels: np.ndarray, num_classes: int, imb_factor: float, rand_number: int) -> np.ndarray:
    """LDAM-DRW imbalance_cifar.py (gen_imbalanced_data), written out with the global NumPy RNG."""
    np.random.seed(rand_number)
    img_max = len(labels) / num_classes
    nums = [int(img_max * imb_factor ** (i / (num_classes - 1.0))) for i in range(num_classes)]
    selected = []
    targets = np.array(labels, dtype=np.int64)
    for the_class, the_num in zip(np.unique(targets), nums, strict=True):
        idx = np.where(targets == the_class)[0]
        np.random.shuffle(idx)
        selected.append(idx[:the_num])
    return np.concatenate(selected)


@pytest.mark.parametrize(("rho", "seed"), [(10, 0), (100, 0), (50, 3)])
def test_subset_matches_ldam_drw(rho, seed):
    rng = np.random.default_rng(1)
    labels = rng.permutation(np.repeat(np.arange(10), 300))
    split = make_longtail_split(labels, 10, rho=rho, seed=seed, val_per_class=0)
    np.testing.assert_array_equal(split.train_indices, ldam_reference(labels, 10, 1 / rho, seed))


def test_deterministic_and_hashed():
    labels = np.repeat(np.arange(5), 100)
    a = make_longtail_split(labels, 5, rho=10, seed=0, val_per_class=5)
    b = make_longtail_split(labels, 5, rho=10, seed=0, val_per_class=5)
    c = make_longtail_split(labels, 5, rho=10, seed=1, val_per_class=5)
    np.testing.assert_array_equal(a.train_indices, b.train_indices)
    assert a.record()["train_sha256"] == b.record()["train_sha256"]
    assert a.record()["train_sha256"] != c.record()["train_sha256"]
    assert indices_sha256([3, 1, 2]) == indices_sha256([1, 2, 3])  # order-independent fingerprint


def test_validation_is_balanced_and_disjoint():
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(10), 200))
    split = make_longtail_split(labels, 10, rho=10, seed=0, val_per_class=20)
    assert set(split.train_indices).isdisjoint(split.val_indices)
    assert np.bincount(labels[split.val_indices], minlength=10).tolist() == [20] * 10
    assert np.bincount(labels[split.train_indices], minlength=10).tolist() == split.train_counts
    # the head class uses all its images in the profile, so its 20 validation images leave the LT subset
    assert split.profile_counts[0] == 200 and split.train_counts[0] == 180
    assert split.moved_to_val == {0: 20}
    assert split.train_counts[1:] == split.profile_counts[1:]


def test_without_validation_the_subset_is_exact():
    labels = np.repeat(np.arange(10), 500)
    split = make_longtail_split(labels, 10, rho=10, seed=0, val_per_class=0)
    assert len(split.train_indices) == sum(longtail_counts(500, 10, 10))
    assert len(split.val_indices) == 0


def test_bad_inputs():
    labels = np.repeat(np.arange(3), 10)
    with pytest.raises(DataError, match="rho must be >= 1"):
        make_longtail_split(labels, 3, rho=0.5)
    with pytest.raises(DataError, match="lower dataset.n_max"):
        make_longtail_split(labels, 3, rho=2, n_max=20)
    with pytest.raises(DataError, match="val_per_class=11 exceeds"):
        make_longtail_split(labels, 3, rho=2, val_per_class=11)
    with pytest.raises(DataError, match=r"classes \[3\] have no training images"):
        make_longtail_split(labels, 4, rho=2)
