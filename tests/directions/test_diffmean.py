"""Diff-in-means: pure function, streaming sums, and the sums written during extraction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steerlit.directions import cache as C
from steerlit.directions.diffmean import ClassSums, combined, diff_mean, load_class_sums, save_class_sums


def test_diff_mean_matches_numpy():
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(7, 5, generator=g) + 1, torch.randn(4, 5, generator=g)
    expected = pos.numpy().astype(np.float64).mean(0) - neg.numpy().astype(np.float64).mean(0)
    np.testing.assert_allclose(diff_mean(pos, neg).numpy(), expected, atol=1e-6)
    with pytest.raises(ValueError, match="both classes"):
        diff_mean(pos, neg[:0])
    with pytest.raises(ValueError):
        diff_mean(pos, neg[:, :3])


def test_streaming_sums_merge_and_save(tmp_path):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(50, 6, generator=g), torch.randint(0, 2, (50,), generator=g)
    whole = ClassSums()
    whole.update("s", x, y)
    parts = [ClassSums(["s"], 6) for _ in range(3)]
    for k, idx in enumerate(torch.arange(50).chunk(3)):
        parts[k].update("s", x[idx], y[idx])
    merged = ClassSums().merge(parts[0]).merge(parts[1]).merge(parts[2])
    torch.testing.assert_close(merged.directions()["s"], whole.directions()["s"])
    torch.testing.assert_close(whole.directions()["s"], diff_mean(x[y == 1], x[y == 0]))
    assert whole.n_per_class() == {"0": int((y == 0).sum()), "1": int((y == 1).sum())}
    save_class_sums(tmp_path / "sums.safetensors", {"train": parts[0], "val": parts[1]})
    back = load_class_sums(tmp_path / "sums.safetensors")
    assert set(back) == {"train", "val"}
    torch.testing.assert_close(back["train"].sums["s"], parts[0].sums["s"])
    both = combined(back, ["train", "val"])
    assert float(both.counts["s"].sum()) == float(parts[0].counts["s"].sum() + parts[1].counts["s"].sum())
    with pytest.raises(ValueError, match="labels"):
        whole.update("s", x[:2], torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="no examples"):
        ClassSums(["t"], 3).directions()


def test_memory_does_not_grow_with_examples():
    cs = ClassSums(["a", "b"], 8)
    before = sum(t.numel() for t in cs.tensors().values())
    for _ in range(20):
        cs.update_all({"a": torch.randn(64, 8), "b": torch.randn(64, 8)}, torch.randint(0, 2, (64,)))
    assert sum(t.numel() for t in cs.tensors().values()) == before


def test_streaming_sums_from_extraction_equal_numpy_on_cache(cache_run):
    acts, meta = C.load_activation_cache(cache_run)
    sums = load_class_sums(C.activations_dir(cache_run) / C.SUMS_FILE)
    assert set(sums) == {"train", "val", "test"}
    for split in ("train", "val", "test"):
        rows = [i for i, m in enumerate(meta) if m["split"] == split]
        y = np.array([meta[i]["label"] for i in rows])
        streamed = sums[split].directions()
        for site, a in acts.items():
            x = a[rows].numpy().astype(np.float64)
            expected = x[y == 1].mean(0) - x[y == 0].mean(0)
            np.testing.assert_allclose(streamed[site].numpy(), expected, atol=1e-5)
