"""Which IFEval prompts `--sample N --seed S --sample-offset K` evaluates (issue #12).

Offset 0 must stay exactly the selection made before offsets existed, so earlier results stay
comparable; offset K takes draws K..K+N-1 of the same seeded order, so offset N is a second set
disjoint from the first.
"""

from __future__ import annotations

import json
import random

import pytest

from sftlab.errors import SftlabError
from sftlab.eval.ifeval import sample_order, select_inputs


def _old_select(inputs, sample, seed):
    """select_inputs(sample=..., seed=...) as it was before --sample-offset (commit 331b314)."""
    if sample >= len(inputs):
        return list(inputs)
    return [inputs[i] for i in sorted(random.Random(seed).sample(range(len(inputs)), sample))]


def _fake(n):
    return [{"key": i} for i in range(n)]


@pytest.fixture(scope="module")
def ifeval_541(ifeval_dir):
    with open(ifeval_dir / "input_data.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_demo_sets_first_is_the_old_selection_second_is_disjoint(ifeval_541):
    assert len(ifeval_541) == 541
    first = select_inputs(ifeval_541, sample=100, seed=0)
    second = select_inputs(ifeval_541, sample=100, seed=0, sample_offset=100)
    assert first == select_inputs(ifeval_541, sample=100, seed=0, sample_offset=0) == _old_select(ifeval_541, 100, 0)
    keys1, keys2 = [i["key"] for i in first], [i["key"] for i in second]
    assert keys1[:5] == [1000, 1040, 1154, 1162, 1220]  # pinned: the demo's published 100 prompts
    assert keys2[:5] == [1051, 1075, 1087, 1098, 1108]
    assert len(set(keys2)) == 100 and not set(keys1) & set(keys2)
    pos = [ifeval_541.index(x) for x in second]
    assert pos == sorted(pos)  # kept in data order, as the first set
    # the 200 prompts of both sets are the first 200 draws of one seeded order
    both = sorted(sample_order(541, 200, 0))
    assert sorted(sample_order(541, 100, 0) + sample_order(541, 100, 0, 100)) == both


@pytest.mark.parametrize("n", [7, 22, 60, 300, 541, 2000])
@pytest.mark.parametrize("k", [1, 3, 6, 25, 50, 100])
@pytest.mark.parametrize("seed", [0, 1, 1234])
def test_offsets_are_windows_of_one_order_whose_start_is_the_old_sample(n, k, seed):
    """For every size, seed and population, also where random.sample draws k by redrawing repeats
    into a set (small k, large n) and a longer sample would come from a different, pool-based order."""
    inputs = _fake(n)
    assert select_inputs(inputs, sample=k, seed=seed) == _old_select(inputs, k, seed)
    if k >= n:
        return
    assert sample_order(n, k, seed) == random.Random(seed).sample(range(n), k)
    windows = [sample_order(n, k, seed, off) for off in range(0, n - k + 1, k)]
    order = [i for w in windows for i in w]
    assert len(set(order)) == len(order)  # consecutive windows never share a prompt
    for off in sorted(o for o in {1, k // 2, k - 1, len(order) - k} if 0 < o <= len(order) - k):
        assert sample_order(n, k, seed, off) == order[off:off + k]  # any offset: a slice of that order
        picked = select_inputs(inputs, sample=k, seed=seed, sample_offset=off)
        assert [i["key"] for i in picked] == sorted(order[off:off + k])
    last = sample_order(n, k, seed, n - k)  # the last window allowed: the order's final draws
    assert len(set(last)) == k and last[:len(order) - (n - k)] == order[n - k:]


def test_a_longer_sample_is_not_always_an_extension_so_offsets_do_not_use_one():
    """Why sample_order does not take sample(range(n), K+N)[K:]: for 50 of 541 random.sample redraws
    repeats into a set, for 100 it draws from a pool; the naive second set overlaps the first."""
    first = set(random.Random(0).sample(range(541), 50))
    naive = set(random.Random(0).sample(range(541), 100)[50:])
    assert first & naive
    assert not first & set(sample_order(541, 50, 0, 50))


def test_selection_errors_are_one_line_and_name_the_numbers(ifeval_541):
    with pytest.raises(SftlabError, match=r"^--sample 100 --sample-offset 442 needs 542 prompts, "
                                          r"but the IFEval inputs hold only 541$"):
        select_inputs(ifeval_541, sample=100, seed=0, sample_offset=442)
    assert len(select_inputs(ifeval_541, sample=100, seed=0, sample_offset=441)) == 100  # the last 100 draws
    with pytest.raises(SftlabError, match=r"--sample-offset must be at least 0, got -1"):
        select_inputs(ifeval_541, sample=100, sample_offset=-1)
    with pytest.raises(SftlabError, match=r"--sample-offset 100 needs --sample"):
        select_inputs(ifeval_541, sample_offset=100)
    with pytest.raises(SftlabError, match=r"--sample-offset 5 needs --sample"):
        select_inputs(ifeval_541, limit=10, sample_offset=5)
    # offset 0 keeps the old behaviour for a sample at least as large as the data: everything
    assert select_inputs(ifeval_541[:10], sample=20) == ifeval_541[:10]
