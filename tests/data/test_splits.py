import pandas as pd

from mangacolor.data.splits import holdout_pages, make_splits, training_pages


def _pages(n, title="t"):
    return pd.DataFrame({"id": [f"{title}/{i:03d}" for i in range(n)]})


def test_fraction_and_disjointness():
    s = make_splits(_pages(100), seed=0, holdout_fraction=0.2)
    assert len(holdout_pages(s)) == 20
    assert not set(holdout_pages(s)["id"]) & set(training_pages(s)["id"])


def test_fixed_seed_is_stable_and_seed_matters():
    a = make_splits(_pages(50), 0, 0.2)
    assert a.equals(make_splits(_pages(50), 0, 0.2))
    assert set(holdout_pages(a)["id"]) != set(holdout_pages(make_splits(_pages(50), 1, 0.2))["id"])


def test_pairs_never_held_out_and_count_overrides_fraction():
    pages = _pages(30)
    paired = set(pages["id"][:10])
    s = make_splits(pages, 0, 0.5, holdout_count=12, exclude_from_holdout=paired)
    assert len(holdout_pages(s)) == 12
    assert not paired & set(holdout_pages(s)["id"])


def test_adding_a_title_keeps_existing_assignments():
    a = make_splits(_pages(40), 0, holdout_fraction=0.0, holdout_count=8)
    b = make_splits(pd.concat([_pages(40), _pages(5, "new")]), 0, 0.0, holdout_count=8)
    # Hash ranking: the new title's pages can only displace, never reshuffle, the old order.
    old_b = b[b["id"].str.startswith("t/")]
    moved = set(holdout_pages(old_b)["id"]) - set(holdout_pages(a)["id"])
    assert not moved


def test_a_fraction_of_the_pairs_is_held_out_for_paired_evaluation():
    pages = _pages(30)
    paired = set(pages["id"][:8])
    s = make_splits(pages, 0, 0.2, exclude_from_holdout=paired, paired_holdout_fraction=0.25)
    held = set(holdout_pages(s)["id"])
    assert len(held & paired) == 2 and len(held - paired) == round(22 * 0.2)
    assert s.equals(make_splits(pages, 0, 0.2, exclude_from_holdout=paired, paired_holdout_fraction=0.25))
    assert not paired & set(holdout_pages(make_splits(pages, 0, 0.2, exclude_from_holdout=paired))["id"])  # default: none
