"""Activation cache: round trip, index, resume after a crash, generate source, 2-process DDP (fork with a shared
model; spawn with ranks that load a bfloat16 model by hub id through ``hf_cache_dir``)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from safetensors import safe_open

import steerlit
from steerlit.data.datamodule import PromptDataModule
from steerlit.data.probe_set import ProbeSet
from steerlit.data.settings import ProbeSettings
from steerlit.directions import cache as C
from steerlit.directions.diffmean import load_class_sums
from steerlit.directions.extraction import ActivationCacheModule, extract_activations
from steerlit.directions.settings import ExtractSettings
from steerlit.intervene.record import ActivationRecorder
from steerlit.models.fingerprint import weights_fingerprint
from steerlit.models.loading import load_model
from steerlit.models.settings import ModelSettings
from steerlit.models.tiny import install_in_hub_cache
from steerlit.runtime import TrainerSettings

BATCH, N_PER_POLE = 4, 20  # as in conftest.py
CPU = TrainerSettings(enable_progress_bar=False)
PROBE = ProbeSettings()
SETTINGS = ExtractSettings(batch_size=BATCH)
REPO = Path(steerlit.__file__).resolve().parents[1]


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
    assert (
        index["weights_fingerprint"] == weights_fingerprint(tiny_adapter)
        and index["model_dtype"] == "float32"
    )
    by_shard = {}
    for e in index["examples"]:
        by_shard.setdefault(e["shard"], []).append(e)
    for s in index["shards"]:  # each shard's key: the configuration and its examples' ids, texts and labels
        assert s["key"] == C.shard_key(index["config_fingerprint"], by_shard[s["name"]])
        assert C.read_shard(C.shard_path(cache_run, s["name"]))[1]["key"] == s["key"]
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
        extract_activations(run, small_probe_set, tiny_adapter, SETTINGS, PROBE, CPU, callbacks=[Crash(4)])
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
    extract_activations(run, small_probe_set, tiny_adapter, SETTINGS, PROBE, CPU)
    assert all(C.shard_path(run, n).stat().st_mtime_ns == t for n, t in kept.items())
    assert C.shard_path(run, done[1]).stat().st_mtime_ns != redo_mtime  # the partial shard was redone
    _assert_same_cache(cache_run, run)


def test_changed_config_recomputes_shards(tmp_path, tiny_adapter, small_probe_set):
    run = tmp_path / "run"
    extract_activations(
        run, small_probe_set, tiny_adapter, ExtractSettings(layers=(1,), batch_size=8), PROBE, CPU
    )
    fp_old = C.read_index(run)["fingerprint"]
    n_old = len(list(C.activations_dir(run).rglob("shard-*.safetensors")))
    settings = ExtractSettings(site_kind="mlp_out", layers=(1, 2), batch_size=16)
    extract_activations(run, small_probe_set, tiny_adapter, settings, PROBE, CPU)
    index = C.read_index(run)
    assert index["fingerprint"] != fp_old and index["sites"] == ["mlp_out.1", "mlp_out.2"]
    acts, _ = C.load_activation_cache(run)
    assert set(acts) == {"mlp_out.1", "mlp_out.2"}
    files = sorted(C.activations_dir(run).rglob("shard-*.safetensors"))
    assert len(files) == len(index["shards"]) < n_old  # stale shards of the old layout are gone


def test_generate_source_does_not_depend_on_the_batches(tmp_path, tiny_adapter):
    ps = ProbeSet(
        "tempo",
        "",
        "fast",
        "slow",
        ["fast drums", "rapid techno", "quick punk"],
        ["slow piano", "lazy jazz", "calm drone"],
    )
    settings = ExtractSettings(source="generate", position="mean", gen_steps=5, batch_size=3)
    probe = ProbeSettings(split=(0.5, 0.5, 0.0))
    extract_activations(tmp_path / "a", ps, tiny_adapter, settings, probe, CPU)
    extract_activations(tmp_path / "b", ps, tiny_adapter, replace(settings, batch_size=2), probe, CPU)
    acts_a, meta_a = C.load_activation_cache(tmp_path / "a")
    acts_b, meta_b = C.load_activation_cache(tmp_path / "b")
    assert [m["id"] for m in meta_a] == [m["id"] for m in meta_b]
    index = C.read_index(tmp_path / "a")
    assert (index["gen_steps"], index["guidance_scale"], index["reduction"]) == (5, 3.0, "mean")
    for site in acts_a:
        assert acts_a[site].shape == (6, tiny_adapter.hidden_size)
        torch.testing.assert_close(acts_a[site], acts_b[site], rtol=1e-4, atol=1e-5)


def test_bad_settings_are_refused(tmp_path, tiny_adapter):
    with pytest.raises(ValueError, match="extract.position=first"):
        ActivationCacheModule(tiny_adapter, tmp_path, ExtractSettings(source="prompt", position="mean"))
    with pytest.raises(TypeError, match="MusicGenAdapter or ModelSettings"):
        ActivationCacheModule("tiny", tmp_path, ExtractSettings())
    with pytest.raises(ValueError, match="spawned ranks"):  # a loaded model does not pickle
        extract_activations(
            tmp_path,
            "tempo",
            tiny_adapter,
            ExtractSettings(),
            PROBE,
            replace(CPU, devices=2, strategy="ddp_spawn"),
        )


def test_two_process_ddp_equals_one_process(tmp_path, cache_run, tiny_adapter, small_probe_set):
    run = tmp_path / "ddp"
    extract_activations(run, small_probe_set, tiny_adapter, SETTINGS, PROBE, replace(CPU, devices=2))
    _assert_same_cache(cache_run, run)
    for split in ("train", "val", "test"):  # streaming diff-mean directions (all-reduced sums)
        one = load_class_sums(C.activations_dir(cache_run) / C.SUMS_FILE)[split].directions()
        two = load_class_sums(C.activations_dir(run) / C.SUMS_FILE)[split].directions()
        for site in one:
            torch.testing.assert_close(one[site], two[site], rtol=0, atol=1e-7)
    assert _writer_ranks(run) == {"0", "1"}  # both ranks wrote their share


def _writer_ranks(run) -> set[str]:
    ranks = set()
    for entry in C.read_index(run)["shards"]:
        with safe_open(str(C.shard_path(run, entry["name"])), framework="pt") as f:
            ranks.add(f.metadata()["rank"])
    return ranks


@pytest.fixture(scope="module")
def hub_bf16_run(tmp_path_factory, tiny_model_dir, small_probe_set):
    """ModelSettings of a bfloat16 model found by hub id through hf_cache_dir, and its one-process cache."""
    root = tmp_path_factory.mktemp("hub-bf16")
    install_in_hub_cache(tiny_model_dir, root / "hub", "facebook/musicgen-small")
    model = ModelSettings(name="facebook/musicgen-small", hf_cache_dir=str(root / "hub"), dtype="bfloat16")
    extract_activations(root / "one", small_probe_set, model, SETTINGS, PROBE, CPU)
    return model, root / "one"


def extract_in_fresh_interpreter(arguments: tuple, pickled: Path) -> None:
    """``extract_activations(*arguments)`` in a new single-threaded ``python`` (its ranks fork from it)."""
    pickled.write_bytes(pickle.dumps(arguments))
    code = (
        "import pickle, sys\n"
        "from steerlit.directions.extraction import extract_activations\n"
        "with open(sys.argv[1], 'rb') as f:\n"
        "    extract_activations(*pickle.load(f))\n"
    )
    paths = (str(REPO), os.environ.get("PYTHONPATH", ""))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    done = subprocess.run(
        [sys.executable, "-c", code, str(pickled)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("strategy", ["ddp_fork", pytest.param("ddp_spawn", marks=pytest.mark.slow)])
def test_ranks_that_load_the_model_get_every_setting(
    tmp_path, hub_bf16_run, cache_run, small_probe_set, strategy
):
    """Ranks get only ModelSettings and load the model themselves: same cache as one process, in bfloat16."""
    model, one = hub_bf16_run
    two = tmp_path / "two"
    arguments = (two, small_probe_set, model, SETTINGS, PROBE, replace(CPU, devices=2, strategy=strategy))
    if strategy == "ddp_fork":  # forked ranks need a caller without threads: not a pytest-xdist worker
        extract_in_fresh_interpreter(arguments, tmp_path / "arguments.pickle")
    else:
        extract_activations(*arguments)
    _assert_same_cache(one, two)
    assert _writer_ranks(two) == {"0", "1"}
    assert C.read_index(two)["model_id"] == "facebook/musicgen-small"
    acts, _ = C.load_activation_cache(two)
    reference, _ = C.load_activation_cache(cache_run)  # the same prompts through the float32 model
    for site, a in acts.items():
        assert torch.equal(a.bfloat16().float(), a)  # computed in bfloat16, stored as float32
        assert not torch.allclose(a, reference[site], rtol=0, atol=1e-6)
        torch.testing.assert_close(a, reference[site], rtol=0.05, atol=0.05)


def test_a_module_with_model_settings_pickles_for_spawned_ranks(tmp_path, hub_bf16_run):
    model, _ = hub_bf16_run
    module = pickle.loads(pickle.dumps(ActivationCacheModule(model, tmp_path, SETTINGS)))
    assert module.model_settings == model and module.adapter is None


def copy_cache(source, run):
    shutil.copytree(C.activations_dir(source), C.activations_dir(run))
    return {e["name"]: C.shard_path(run, e["name"]).stat().st_mtime_ns for e in C.read_index(run)["shards"]}


def rewritten(run, mtimes) -> set[str]:
    return {name for name, t in mtimes.items() if C.shard_path(run, name).stat().st_mtime_ns != t}


def test_an_edited_prompt_recomputes_exactly_its_shard(tmp_path, cache_run, tiny_adapter, small_probe_set):
    """Issue 23: editing a probe text (same count) reused every stale shard; the direction was wrong."""
    run = tmp_path / "run"
    mtimes = copy_cache(cache_run, run)
    example = next(e for e in C.read_index(run)["examples"] if e["split"] == "train" and e["label"] == 1)
    i = int(example["id"].rsplit("/", 1)[1])
    prompts = list(small_probe_set.positive_prompts)
    prompts[i] = "an edited prompt: a racing breakbeat with a galloping bassline"
    edited = replace(small_probe_set, positive_prompts=prompts)
    extract_activations(run, edited, tiny_adapter, SETTINGS, PROBE, CPU)
    assert rewritten(run, mtimes) == {example["shard"]}
    index = C.read_index(run)
    assert next(e for e in index["examples"] if e["id"] == example["id"])["text"] == prompts[i]
    assert index["fingerprint"] != C.read_index(cache_run)["fingerprint"]
    fresh = tmp_path / "fresh"
    extract_activations(fresh, edited, tiny_adapter, SETTINGS, PROBE, CPU)
    _assert_same_cache(fresh, run)
    old = load_class_sums(C.activations_dir(cache_run) / C.SUMS_FILE)["train"].directions()
    new = load_class_sums(C.activations_dir(run) / C.SUMS_FILE)["train"].directions()
    assert all(not torch.equal(old[site], new[site]) for site in old)  # the direction follows the new text


def test_a_retrained_model_in_the_same_folder_recomputes_the_cache(
    tmp_path, tiny_model_dir, small_probe_set, monkeypatch
):
    """Issue 23: a retrained checkpoint saved into the same folder reused the old shards."""
    monkeypatch.setenv("STEERLIT_CACHE", str(tmp_path / "steerlit-cache"))  # its file digests
    folder, run = tmp_path / "model", tmp_path / "run"
    shutil.copytree(tiny_model_dir, folder)
    adapter = load_model(str(folder))
    extract_activations(run, small_probe_set, adapter, SETTINGS, PROBE, CPU)
    before, acts_before = C.read_index(run), C.load_activation_cache(run)[0]
    mtimes = {e["name"]: C.shard_path(run, e["name"]).stat().st_mtime_ns for e in before["shards"]}
    with torch.no_grad():  # "training": one weight changes; the model is saved over the old one
        adapter.decoder_layers[0].fc1.weight[0, 0] += 0.5
    adapter.model.save_pretrained(folder)
    retrained = load_model(str(folder))
    assert retrained.model_id == adapter.model_id
    extract_activations(run, small_probe_set, retrained, SETTINGS, PROBE, CPU)
    after = C.read_index(run)
    assert after["weights_fingerprint"] != before["weights_fingerprint"]
    assert rewritten(run, mtimes) == set(mtimes)  # every shard was recomputed
    assert not {s["key"] for s in after["shards"]} & {s["key"] for s in before["shards"]}
    acts_after = C.load_activation_cache(run)[0]
    assert all(not torch.equal(acts_before[site], acts_after[site]) for site in acts_after)


def test_a_shard_overwritten_in_place_is_detected_and_redone(
    tmp_path, cache_run, tiny_adapter, small_probe_set
):
    """Issue 23 (Low 4): values overwritten in place, with the shard's header and metadata intact, were used."""
    run = tmp_path / "run"
    mtimes = copy_cache(cache_run, run)
    name = C.read_index(run)["shards"][2]["name"]
    path = C.shard_path(run, name)
    header = int.from_bytes(path.read_bytes()[:8], "little")
    with open(path, "r+b") as f:  # four bytes of tensor data, in place
        f.seek(8 + header + 16)
        f.write(torch.tensor([123.0]).numpy().tobytes())
    with pytest.raises(C.CacheError, match="checksum"):
        C.load_activation_cache(run)
    extract_activations(run, small_probe_set, tiny_adapter, SETTINGS, PROBE, CPU)
    assert rewritten(run, mtimes) == {name}
    _assert_same_cache(cache_run, run)
