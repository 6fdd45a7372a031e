"""``PromptDataModule``: a probe set's labelled prompts, split and batched into fixed shards.

Every split (train/val/test) is cut into consecutive batches of ``batch_size`` examples; one batch is
one *shard* of the activation cache (``<split>/shard-00003``). The shards depend only on the probe
set, ``form``, ``fractions``, ``seed`` and ``batch_size`` -- not on the number of processes, their
timing or an earlier interrupted run -- so a cache can be resumed shard by shard and a DDP run writes
exactly the shards of a one-process run.

``predict_dataloader()`` yields one shard per step (a ``DataLoader`` over shards with
``batch_size=None``). Under DDP, Lightning adds its ``UnrepeatedDistributedSamplerWrapper`` for
predict (shards ``rank, rank + W, ...``; no padding duplicates); the cache writer still
de-duplicates by shard name, so a padding sampler would not double-count either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from steerlit.data.probe_set import ExampleForm, ProbeSet, load_probe_set
from steerlit.data.settings import ProbeSettings
from steerlit.data.splits import SPLIT_NAMES, split_examples


@dataclass(frozen=True)
class PromptRecord:
    """One example with its place in the cache: global ``index``, ``split`` and ``shard`` name."""

    index: int
    id: str
    text: str
    label: int
    pole: str
    pair_index: int | None
    split: str
    shard: str

    def to_dict(self) -> dict:
        return asdict(self)


def shard_name(split: str, k: int) -> str:
    return f"{split}/shard-{k:05d}"


def build_records(
    probe_set: ProbeSet,
    *,
    form: ExampleForm = "poles",
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    batch_size: int = 16,
    splits: Sequence[str] = SPLIT_NAMES,
) -> list[list[PromptRecord]]:
    """Shards (lists of records) in split order, then in-split order; global indices run 0..N-1."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    unknown = [s for s in splits if s not in SPLIT_NAMES]
    if unknown:
        raise ValueError(f"Unknown split(s) {unknown}; use some of {SPLIT_NAMES}.")
    by_split = split_examples(probe_set.examples(form), fractions=fractions, seed=seed)
    shards: list[list[PromptRecord]] = []
    index = 0
    for split in splits:
        examples = by_split[split]
        for k, start in enumerate(range(0, len(examples), batch_size)):
            shard = []
            for ex in examples[start : start + batch_size]:
                shard.append(
                    PromptRecord(
                        index, ex.id, ex.text, ex.label, ex.pole, ex.pair_index, split, shard_name(split, k)
                    )
                )
                index += 1
            shards.append(shard)
    return shards


class ShardDataset(Dataset):
    """Item ``i`` is shard ``i``: a list of :class:`PromptRecord` (one batch)."""

    def __init__(self, shards: list[list[PromptRecord]]):
        self.shards = shards

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, i: int) -> list[PromptRecord]:
        return self.shards[i]

    @property
    def records(self) -> list[PromptRecord]:
        return [r for shard in self.shards for r in shard]


class PromptCollator:
    """Records -> batch dict.

    Keys: ``input_ids``/``attention_mask`` (B, S) long (only with a tokenizer; padded by it),
    ``labels`` (B,) long, ``index`` (B,) long, ``ids``/``texts``/``splits``/``poles`` lists of str,
    ``pair_index`` list, ``shard`` str (name of the shard when all records share one, else "").
    """

    def __init__(self, tokenizer=None, max_length: int | None = None):
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, records: list[PromptRecord]) -> dict:
        if records and not isinstance(records[0], PromptRecord):  # a list of shards from batch_size>=1
            records = [r for shard in records for r in shard]
        batch = {
            "labels": torch.tensor([r.label for r in records], dtype=torch.long),
            "index": torch.tensor([r.index for r in records], dtype=torch.long),
            "ids": [r.id for r in records],
            "texts": [r.text for r in records],
            "splits": [r.split for r in records],
            "poles": [r.pole for r in records],
            "pair_index": [r.pair_index for r in records],
            "shard": records[0].shard if len({r.shard for r in records}) == 1 else "",
        }
        if self.tokenizer is not None and records:
            kw = {"truncation": True, "max_length": self.max_length} if self.max_length else {}
            enc = self.tokenizer(batch["texts"], return_tensors="pt", padding=True, **kw)
            batch["input_ids"], batch["attention_mask"] = enc["input_ids"], enc["attention_mask"]
        return batch


class PromptDataModule(L.LightningDataModule):
    """Labelled prompts of one probe set, split (train/val/test) and cut into deterministic shards.

    ``probe_set``: a :class:`ProbeSet`, a short name (``"tempo"``) or a YAML path. ``form``: ``poles``
    or ``pairs`` (twins share a split). ``fractions``/``seed``: see :func:`split_examples`.
    ``batch_size``: examples per shard. ``tokenizer``: an HF tokenizer used by the collate function
    (None: batches carry texts only and the model tokenises).
    """

    def __init__(
        self,
        probe_set: ProbeSet | str | Path,
        *,
        tokenizer=None,
        form: ExampleForm = "poles",
        fractions: Sequence[float] = (0.7, 0.15, 0.15),
        seed: int = 0,
        batch_size: int = 16,
        splits: Sequence[str] = SPLIT_NAMES,
        num_workers: int = 0,
        max_length: int | None = None,
        probes_dir: str | Path | None = None,
    ):
        super().__init__()
        self.probe_set = (
            probe_set if isinstance(probe_set, ProbeSet) else load_probe_set(probe_set, probes_dir)
        )
        self.tokenizer = tokenizer
        self.form, self.fractions, self.seed = form, tuple(fractions), int(seed)
        self.batch_size, self.splits, self.num_workers = int(batch_size), tuple(splits), int(num_workers)
        self.collate = PromptCollator(tokenizer, max_length)
        self.dataset: ShardDataset | None = None

    @classmethod
    def from_settings(
        cls, probe_set: ProbeSet | str | Path, probe: ProbeSettings, *, batch_size: int, tokenizer=None
    ) -> PromptDataModule:
        """The prompts of ``probe_set`` with the example form, split fractions and split seed of ``probe``,
        cut into shards of ``batch_size`` (``probe.max_per_pole`` is the caller's: it picks the probe set)."""
        return cls(
            probe_set,
            tokenizer=tokenizer,
            form=probe.form,
            fractions=probe.split,
            seed=probe.seed,
            batch_size=batch_size,
        )

    def config(self) -> dict:
        """What determines the shards (stored in the cache index)."""
        return {
            "probe_set": self.probe_set.name,
            "positive": self.probe_set.positive,
            "negative": self.probe_set.negative,
            "form": self.form,
            "fractions": list(self.fractions),
            "split_seed": self.seed,
            "batch_size": self.batch_size,
            "splits": list(self.splits),
        }

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            self.dataset = ShardDataset(
                build_records(
                    self.probe_set,
                    form=self.form,
                    fractions=self.fractions,
                    seed=self.seed,
                    batch_size=self.batch_size,
                    splits=self.splits,
                )
            )

    @property
    def records(self) -> list[PromptRecord]:
        self.setup()
        return self.dataset.records

    def predict_dataloader(self) -> DataLoader:
        """All splits, one shard per batch, in order (train shards, then val, then test)."""
        self.setup()
        return DataLoader(
            self.dataset,
            batch_size=None,
            shuffle=False,
            collate_fn=self.collate,
            num_workers=self.num_workers,
        )

    def split_dataloader(self, split: str) -> DataLoader:
        """The shards of one split only (same batches as in ``predict_dataloader``)."""
        self.setup()
        shards = [s for s in self.dataset.shards if s[0].split == split]
        return DataLoader(ShardDataset(shards), batch_size=None, shuffle=False, collate_fn=self.collate)
