"""The split-by-entity rule: deterministic, seeded, and no entity in two splits."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raymlp.errors import ValidationError
from raymlp.training.data import (
    LABEL_COL,
    SPLIT_COL,
    _split_and_label,
    label_values,
    split_codes,
)

FRACTIONS = (0.7, 0.15, 0.15)


def _keys(ids: list) -> pa.Table:
    return pa.table({"customer_id": ids})


def test_every_entity_lands_in_exactly_one_split():
    ids = [f"c{i % 500}" for i in range(5000)]  # 10 rows per entity
    codes = split_codes(_keys(ids), ["customer_id"], seed=7, fractions=FRACTIONS)
    by_entity: dict[str, set[int]] = {}
    for e, c in zip(ids, codes.tolist()):
        by_entity.setdefault(e, set()).add(c)
    assert all(len(s) == 1 for s in by_entity.values())
    assert {c for s in by_entity.values() for c in s} == {0, 1, 2}


def test_fractions_are_respected_over_many_entities():
    ids = [f"e{i}" for i in range(20_000)]
    codes = split_codes(_keys(ids), ["customer_id"], seed=1, fractions=FRACTIONS)
    shares = np.bincount(codes, minlength=3) / len(ids)
    assert np.allclose(shares, FRACTIONS, atol=0.015)


def test_same_seed_same_split_other_seed_other_split():
    ids = [f"e{i}" for i in range(2000)]
    a = split_codes(_keys(ids), ["customer_id"], seed=3, fractions=FRACTIONS)
    b = split_codes(_keys(ids), ["customer_id"], seed=3, fractions=FRACTIONS)
    c = split_codes(_keys(ids), ["customer_id"], seed=4, fractions=FRACTIONS)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@settings(max_examples=40, deadline=None)
@given(
    ids=st.lists(st.integers(0, 50), min_size=1, max_size=200),
    cut=st.integers(0, 200),
    seed=st.integers(0, 10_000),
)
def test_split_does_not_depend_on_row_order_or_batching(ids, cut, seed):
    whole = split_codes(_keys(ids), ["customer_id"], seed=seed, fractions=FRACTIONS)
    cut = min(cut, len(ids))
    parts = np.concatenate(
        [
            split_codes(_keys(ids[:cut]), ["customer_id"], seed=seed, fractions=FRACTIONS),
            split_codes(_keys(ids[cut:]), ["customer_id"], seed=seed, fractions=FRACTIONS),
        ]
    )
    assert np.array_equal(whole, parts)
    rev = split_codes(_keys(ids[::-1]), ["customer_id"], seed=seed, fractions=FRACTIONS)
    assert np.array_equal(whole, rev[::-1])


def test_composite_keys_and_key_types_are_canonical():
    t1 = pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    t2 = pa.table({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "z"]})  # 1 and 1.0: one entity
    c1 = split_codes(t1, ["a", "b"], seed=0, fractions=FRACTIONS)
    c2 = split_codes(t2, ["a", "b"], seed=0, fractions=FRACTIONS)
    assert np.array_equal(c1, c2)


def test_split_and_label_drops_unlabelled_rows_and_keeps_inputs():
    batch = pa.table(
        {
            "customer_id": ["a", "b", "c", "d"],
            "x": [1.0, 2.0, 3.0, 4.0],
            "churned": [True, None, False, True],
            "other": [0, 0, 0, 0],
        }
    )
    out = _split_and_label(
        batch,
        entity_keys=["customer_id"],
        label_column="churned",
        positive=True,
        seed=0,
        fractions=FRACTIONS,
        keep=["customer_id", "x"],
    )
    assert out.column_names == ["customer_id", "x", LABEL_COL, SPLIT_COL]
    assert out.column("customer_id").to_pylist() == ["a", "c", "d"]
    assert out.column(LABEL_COL).to_pylist() == [1.0, 0.0, 1.0]


def test_label_values_for_bools_ints_and_strings():
    assert label_values(pa.array([0, 1, None, 1]), 1).tolist()[:2] == [0.0, 1.0]
    assert np.isnan(label_values(pa.array([0, 1, None]), 1)[2])
    assert label_values(pa.array(["yes", "no", "yes"]), "yes").tolist() == [1.0, 0.0, 1.0]
    assert label_values(pa.array([True, False]), True).tolist() == [1.0, 0.0]


def test_label_type_mismatch_names_the_field():
    with pytest.raises(ValidationError) as e:
        label_values(pa.array([0, 1]), "yes")
    assert e.value.field == "dataset.positive_label"
