"""PromptDataModule: deterministic shards, split bookkeeping, tokenizer padding."""

from __future__ import annotations

import pytest
import torch

from steerlit.data.datamodule import PromptDataModule, build_records
from steerlit.data.probe_set import ProbeSet
from steerlit.data.settings import ProbeSettings


@pytest.fixture(scope="module")
def probe_set() -> ProbeSet:
    pos = [f"fast song number {i} with drums" for i in range(13)]
    neg = [f"slow piece number {i}" for i in range(13)]
    return ProbeSet("tempo", "", "fast", "slow", pos, neg, pairs=list(zip(pos, neg)))


@pytest.fixture(scope="module")
def tokenizer():
    from steerlit.models.tokenizer import build_t5_tokenizer

    return build_t5_tokenizer(vocab_size=256)


def test_shards_cover_every_example_once_in_split_order(probe_set):
    shards = build_records(probe_set, batch_size=4, seed=3)
    records = [r for s in shards for r in s]
    assert sorted(r.id for r in records) == sorted(e.id for e in probe_set.examples())
    assert [r.index for r in records] == list(range(len(records)))
    assert all(len(s) <= 4 and len({r.shard for r in s}) == 1 for s in shards)
    order = [r.split for r in records]
    assert order == sorted(order, key=["train", "val", "test"].index)
    for shard in shards:  # shard names are per split and consecutive
        assert shard[0].shard.startswith(shard[0].split + "/shard-")
    assert build_records(probe_set, batch_size=4, seed=3) == shards  # deterministic
    assert build_records(probe_set, batch_size=4, seed=4) != shards


def test_pairs_form_keeps_twins_together(probe_set):
    records = [r for s in build_records(probe_set, form="pairs", batch_size=5) for r in s]
    by_pair = {}
    for r in records:
        by_pair.setdefault(r.pair_index, set()).add(r.split)
    assert all(len(splits) == 1 for splits in by_pair.values())
    assert {r.label for r in records} == {0, 1}


def test_predict_dataloader_batches_are_padded_shards(probe_set, tokenizer):
    dm = PromptDataModule(probe_set, tokenizer=tokenizer, batch_size=4, seed=0)
    batches = list(dm.predict_dataloader())
    assert len(batches) == len(dm.dataset)
    seen = []
    for b in batches:
        n = len(b["ids"])
        assert b["input_ids"].shape == b["attention_mask"].shape and b["input_ids"].shape[0] == n
        assert b["labels"].dtype == torch.long and b["labels"].shape == (n,)
        assert len(set(b["splits"])) == 1 and b["shard"].startswith(b["splits"][0])
        lengths = b["attention_mask"].sum(1)
        assert int(lengths.max()) == b["input_ids"].shape[1]  # padded to the longest
        seen += b["ids"]
    assert seen == [r.id for r in dm.records]
    assert dm.config()["batch_size"] == 4
    split_ids = [i for b in dm.split_dataloader("val") for i in b["ids"]]
    assert split_ids == [r.id for r in dm.records if r.split == "val"]


def test_without_tokenizer_batches_carry_texts_only(probe_set):
    dm = PromptDataModule(probe_set, batch_size=8)
    batch = next(iter(dm.predict_dataloader()))
    assert "input_ids" not in batch and len(batch["texts"]) == 8


def test_from_settings_takes_form_split_and_seed(probe_set):
    probe = ProbeSettings(form="pairs", split=(0.5, 0.25, 0.25), seed=7)
    dm = PromptDataModule.from_settings(probe_set, probe, batch_size=3)
    expected = build_records(probe_set, form="pairs", fractions=(0.5, 0.25, 0.25), seed=7, batch_size=3)
    assert [r for s in expected for r in s] == dm.records
    config = dm.config()
    assert (config["form"], config["fractions"], config["split_seed"], config["batch_size"]) == (
        "pairs",
        [0.5, 0.25, 0.25],
        7,
        3,
    )


def test_bad_arguments(probe_set):
    with pytest.raises(ValueError, match="batch_size"):
        build_records(probe_set, batch_size=0)
    with pytest.raises(ValueError, match="split"):
        build_records(probe_set, splits=("train", "holdout"))
