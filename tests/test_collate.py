"""The training collator (sftlab.train.collate): dynamic padding, multiples of 8, max_length padding."""

from __future__ import annotations

import pytest
import torch

from sftlab.errors import ConfigError
from sftlab.prep.masking_parts import IGNORE_INDEX
from sftlab.train.collate import SFTDataCollator

PAD = 7


def _ex(n: int, start: int = 100, trained_from: int = 0) -> dict:
    ids = list(range(start, start + n))
    return {"input_ids": ids, "labels": [IGNORE_INDEX] * trained_from + ids[trained_from:], "attention_mask": [1] * n,
            "id": f"ex{n}"}


def test_pads_to_the_longest_on_the_right():
    batch = SFTDataCollator(pad_token_id=PAD)([_ex(3, trained_from=1), _ex(5), _ex(1)])
    assert set(batch) == {"input_ids", "labels", "attention_mask"}  # extra keys such as "id" are dropped
    assert all(t.dtype == torch.long and t.shape == (3, 5) for t in batch.values())
    assert batch["input_ids"][0].tolist() == [100, 101, 102, PAD, PAD]
    assert batch["labels"][0].tolist() == [-100, 101, 102, -100, -100]
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 0, 0]
    assert batch["input_ids"][1].tolist() == [100, 101, 102, 103, 104]
    assert batch["attention_mask"][2].tolist() == [1, 0, 0, 0, 0]


@pytest.mark.parametrize("longest, expected", [(1, 8), (8, 8), (9, 16), (13, 16)])
def test_pad_to_multiple_of_8(longest, expected):
    batch = SFTDataCollator(pad_token_id=PAD, pad_to_multiple_of=8)([_ex(longest), _ex(1)])
    assert batch["input_ids"].shape == (2, expected)
    assert int(batch["attention_mask"].sum()) == longest + 1
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()


def test_padding_to_max_length_and_cutting_longer_examples():
    c = SFTDataCollator(pad_token_id=PAD, padding="max_length", max_length=6)
    batch = c([_ex(2), _ex(9)])
    assert batch["input_ids"].shape == (2, 6)
    assert batch["input_ids"][1].tolist() == list(range(100, 106))
    # longest padding with a max_length cap
    batch = SFTDataCollator(pad_token_id=PAD, max_length=4)([_ex(2), _ex(9)])
    assert batch["input_ids"].shape == (2, 4)


def test_dynamic_padding_keeps_every_real_token_and_label():
    exs = [_ex(n, start=10 * n, trained_from=n // 2) for n in (4, 11, 7)]
    batch = SFTDataCollator(pad_token_id=PAD)(exs)
    for i, ex in enumerate(exs):
        n = len(ex["input_ids"])
        assert batch["input_ids"][i, :n].tolist() == ex["input_ids"]
        assert batch["labels"][i, :n].tolist() == ex["labels"]
    assert int((batch["labels"] != IGNORE_INDEX).sum()) == sum(sum(1 for x in e["labels"] if x != IGNORE_INDEX) for e in exs)


def test_accepts_tensors_and_rejects_bad_input():
    ex = {k: torch.tensor(v) for k, v in _ex(3).items() if k != "id"}
    assert SFTDataCollator(pad_token_id=PAD)([ex])["input_ids"].shape == (1, 3)
    with pytest.raises(ValueError, match="lengths differ"):
        SFTDataCollator(pad_token_id=PAD)([{"input_ids": [1, 2], "labels": [1], "attention_mask": [1, 1]}])
    with pytest.raises(ConfigError):
        SFTDataCollator(pad_token_id=PAD, padding="max_length")
    with pytest.raises(ConfigError):
        SFTDataCollator(pad_token_id=PAD, padding="shortest")


def test_collates_preprocessed_rows(tokenizer, tmp_path):
    from pathlib import Path

    from sftlab.prep.pipeline import PreprocessConfig, preprocess

    fixtures = Path(__file__).parent / "fixtures"
    cfg = PreprocessConfig(data=str(fixtures / "sharegpt_like.json"), tokenizer="unused-when-given", chat_template="chatml",
                           num_proc=1)
    ds = preprocess(cfg, tmp_path, tokenizer=tokenizer, progress=False).dataset
    rows = [ds[i] for i in range(len(ds))]
    batch = SFTDataCollator(pad_token_id=tokenizer.pad_token_id, pad_to_multiple_of=8)(rows)
    longest = max(len(r["input_ids"]) for r in rows)
    assert batch["input_ids"].shape[1] == -(-longest // 8) * 8
    assert batch["attention_mask"].sum(1).tolist() == [len(r["input_ids"]) for r in rows]
