"""Activation cache: round trip, index, resume after a crash, generate source, 2-process DDP."""

from __future__ import annotations

import json

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from safetensors import safe_open

from steerlit.data.datamodule import PromptDataModule
from steerlit.data.probe_set import ProbeSet
from steerlit.directions import cache as C
from steerlit.directions.diffmean import load_class_sums
from steerlit.directions.extraction import ActivationCacheModule, extract_activations
from steerlit.intervene.record import ActivationRecorder

BATCH, N_PER_POLE = 4, 20  # as in conftest.py


def _assert_same_cache(run_a, run_b):
    acts_a, meta_a = C.load_activation_cache(run_a)
    acts_b, meta_b = C.load_activation_cache(run_b)
    assert meta_a == meta_b
    assert acts_a.keys() == acts_b.keys()
    for site in acts_a:
        torch.testing.assert_close(acts_a[site], acts_b[site], rtol=0, atol=1e-6)
    sums_a = load_class_sums(C.activations_dir(run_a) / C.SUMS_FILE)
    sums_b = load_class_sums(C.activations_dir(run_b) / C.SUMS_FILE)
    for split in sums_a:
        for site in sums_a[split].sums:
            torch.testing.assert_close(sums_a[split].sums[site], sums_b[split].sums[site], rtol=0, atol=1e-9)
            assert torch.equal(sums_a[split].counts[site], sums_b[split].counts[site])


def test_cache_round_trip_matches_direct_recording(cache_run, tiny_adapter, small_probe_set):
    acts, meta = C.load_activation_cache(cache_run)
    n = 2 * N_PER_POLE
    assert len(meta) == n and set(acts) == {f"resid_post.{i}" for i in range(tiny_adapter.num_layers)}
    assert all(a.shape == (n, tiny_adapter.hidden_size) and a.dtype == torch.float32 for a in acts.values())
    # Independent recording: same shards, plain forward with hidden states + a recorder for the last block.
    dm = PromptDataModule(small_probe_set, tokenizer=tiny_adapter.tokenizer, batch_size=BATCH)
    model, k = tiny_adapter.model, tiny_adapter.num_codebooks
    bos = model.generation_config.decoder_start_token_id
    rows = {s: [] for s in acts}
    last = f"resid_post.{tiny_adapter.num_layers - 1}"
    with torch.no_grad():
        for batch in dm.predict_dataloader():
            dec = torch.full((len(batch["ids"]) * k, 1), bos, dtype=torch.long)
            with ActivationRecorder(tiny_adapter, [last], reduction="first") as rec:
                out = model(
                    input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"],
                    decoder_input_ids=dec,
                    output_hidden_states=True,
                )
            for i in range(tiny_adapter.num_layers - 1):
                rows[f"resid_post.{i}"].append(out.decoder_hidden_states[i + 1][:, -1])
            rows[last].append(rec.results[last])
    for site, chunks in rows.items():
        torch.testing.assert_close(acts[site], torch.cat(chunks), rtol=0, atol=1e-6)
    # split subsets and metadata
    test_acts, test_meta = C.load_activation_cache(cache_run, split="test")
    assert {m["split"] for m in test_meta} == {"test"}
    rows_test = [i for i, m in enumerate(meta) if m["split"] == "test"]
    assert torch.equal(test_acts["resid_post.0"], acts["resid_post.0"][rows_test])
    assert [m["id"] for m in meta] == [r.id for r in dm.records]


def test_index_describes_the_cache(cache_run, tiny_adapter):
    index = json.loads((C.activations_dir(cache_run) / C.INDEX_FILE).read_text())
    assert index["model_id"] == tiny_adapter.model_id and index["source"] == "prompt"
    assert index["reduction"] == "first" and index["sites"] == tiny_adapter.sites(("resid_post",))
    assert {"probe_set", "split_seed", "gen_seed", "fingerprint", "examples", "shards"} <= set(index)
    assert all(s["status"] == "complete" for s in index["shards"])
    assert {e["split"] for e in index["examples"]} == {"train", "val", "test"}
    assert sum(s["n"] for s in index["shards"]) == len(index["examples"])
    for s in index["shards"]:
        assert (C.activations_dir(cache_run) / s["file"]).exists()
    assert not list(C.activations_dir(cache_run).rglob(".*tmp*"))  # no temp files left


class Crash(Callback):
    """Simulates a killed job: raises after ``k`` predict batches."""

    def __init__(self, k: int):
        self.k = k

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx + 1 >= self.k:
            raise RuntimeError("simulated crash")


def test_killed_and_resumed_extraction_equals_uninterrupted(
    tmp_path, cache_run, tiny_adapter, small_probe_set
):
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        extract_activations(run, small_probe_set, tiny_adapter, batch_size=BATCH, callbacks=[Crash(4)])
    # the index is written at the start and the end: after a crash every shard is still "pending",
    # and the shard files that made it to disk (atomically) are the ground truth
    assert {s["status"] for s in C.read_index(run)["shards"]} == {"pending"}
    with pytest.raises(C.CacheError, match="resume"):
        C.load_activation_cache(run)
    done = sorted(
        p.relative_to(C.activations_dir(run)).with_suffix("").as_posix()
        for p in C.activations_dir(run).rglob("shard-*.safetensors")
    )
    assert len(done) == 4
    # shard 0: torn file; shard 1: marked partial in the index; shards 2, 3: intact and must be reused
    torn = C.shard_path(run, done[0])
    torn.write_bytes(torn.read_bytes()[:100])
    C.mark_shard(run, done[1], "partial")
    redo_mtime = C.shard_path(run, done[1]).stat().st_mtime_ns
    kept = {n: C.shard_path(run, n).stat().st_mtime_ns for n in done[2:]}
    extract_activations(run, small_probe_set, tiny_adapter, batch_size=BATCH)
    assert all(C.shard_path(run, n).stat().st_mtime_ns == t for n, t in kept.items())
    assert C.shard_path(run, done[1]).stat().st_mtime_ns != redo_mtime  # the partial shard was redone
    _assert_same_cache(cache_run, run)


def test_changed_config_recomputes_shards(tmp_path, tiny_adapter, small_probe_set):
    run = tmp_path / "run"
    extract_activations(run, small_probe_set, tiny_adapter, batch_size=8, sites=["resid_post.1"])
    fp_old = C.read_index(run)["fingerprint"]
    n_old = len(list(C.activations_dir(run).rglob("shard-*.safetensors")))
    sites = ["resid_post.1", "mlp_out.2"]
    extract_activations(run, small_probe_set, tiny_adapter, batch_size=16, sites=sites)
    index = C.read_index(run)
    assert index["fingerprint"] != fp_old and index["sites"] == sites
    acts, _ = C.load_activation_cache(run)
    assert set(acts) == {"resid_post.1", "mlp_out.2"}
    files = sorted(C.activations_dir(run).rglob("shard-*.safetensors"))
    assert len(files) == len(index["shards"]) < n_old  # stale shards of the old layout are gone


def test_generate_source_is_deterministic(tmp_path, tiny_adapter):
    ps = ProbeSet(
        "tempo",
        "",
        "fast",
        "slow",
        ["fast drums", "rapid techno", "quick punk"],
        ["slow piano", "lazy jazz", "calm drone"],
    )
    kw = dict(
        source="generate", gen_steps=5, gen_seed=7, reduction="mean", batch_size=3, fractions=(0.5, 0.5, 0.0)
    )
    extract_activations(tmp_path / "a", ps, tiny_adapter, **kw)
    extract_activations(tmp_path / "b", ps, tiny_adapter, **{**kw, "batch_size": 2})  # other batches
    acts_a, meta_a = C.load_activation_cache(tmp_path / "a")
    acts_b, meta_b = C.load_activation_cache(tmp_path / "b")
    assert [m["id"] for m in meta_a] == [m["id"] for m in meta_b]
    assert C.read_index(tmp_path / "a")["gen_steps"] == 5
    for site in acts_a:
        assert acts_a[site].shape == (6, tiny_adapter.hidden_size)
        torch.testing.assert_close(acts_a[site], acts_b[site], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="reduction"):
        ActivationCacheModule(tiny_adapter, tmp_path, source="prompt", reduction="mean")


def test_two_process_ddp_equals_one_process(tmp_path, cache_run, tiny_adapter, small_probe_set):
    run = tmp_path / "ddp"
    extract_activations(run, small_probe_set, tiny_adapter, batch_size=BATCH, devices=2)
    _assert_same_cache(cache_run, run)
    for split in ("train", "val", "test"):  # streaming diff-mean directions (all-reduced sums)
        one = load_class_sums(C.activations_dir(cache_run) / C.SUMS_FILE)[split].directions()
        two = load_class_sums(C.activations_dir(run) / C.SUMS_FILE)[split].directions()
        for site in one:
            torch.testing.assert_close(one[site], two[site], rtol=0, atol=1e-7)
    ranks = set()
    for entry in C.read_index(run)["shards"]:
        with safe_open(str(C.shard_path(run, entry["name"])), framework="pt") as f:
            ranks.add(f.metadata()["rank"])
    assert ranks == {"0", "1"}  # both ranks wrote their share
