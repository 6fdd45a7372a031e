import copy
import json
import os
import shutil

import pytest
import torch

from steerlit.files import sha256_file
from steerlit.models.fingerprint import (
    DIGESTS_FILE,
    folder_fingerprint,
    model_files,
    parameters_fingerprint,
    weights_fingerprint,
)
from steerlit.models.loading import ModelLoadError, load_adapter, load_model
from steerlit.models.settings import ModelSettings
from steerlit.models.tiny import build_tiny_musicgen, install_in_hub_cache, tiny_musicgen_config


def test_tiny_model_loads_through_from_pretrained(tiny_adapter, tiny_model_dir):
    a = tiny_adapter
    assert type(a.model).__name__ == "MusicgenForConditionalGeneration"
    assert (a.hidden_size, a.num_layers, a.num_codebooks) == (32, 4, 4)
    assert a.sample_rate == 32000 and a.frame_rate == 50.0
    assert a.model_id == str(tiny_model_dir)
    assert a.sites(("resid_post",)) == [f"resid_post.{i}" for i in range(4)]
    assert len(a.sites()) == 4 * len(a.site_kinds)
    enc = a.tokenize(["a fast song", "slow"])
    assert enc["input_ids"].shape[0] == 2 and enc["attention_mask"].shape == enc["input_ids"].shape
    assert a.seconds_to_steps(1.0) == 50 + 3


def test_dtype_option(tiny_model_dir):
    a = load_model(str(tiny_model_dir), dtype="bfloat16")
    assert a.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="Unknown dtype"):
        load_model(str(tiny_model_dir), dtype="float8")


@pytest.mark.parametrize("model_id", ["facebook/musicgen-small", "facebook/musicgen-medium"])
def test_hub_id_offline_fails_fast_with_instructions(tmp_path, model_id):
    empty = tmp_path / "empty-cache"
    with pytest.raises(ModelLoadError) as err:
        load_model(model_id, hf_cache_dir=str(empty))
    message = str(err.value)
    assert str(empty) in message and "huggingface-cli" not in message
    assert f"`hf download {model_id}`" in message  # the current huggingface_hub CLI
    assert f'huggingface_hub.snapshot_download("{model_id}")' in message
    assert f"hf download {model_id} --local-dir DIR" in message and "model.allow_download=true" in message


def test_folder_missing_weights_names_the_files(tiny_model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="missing model.safetensors"):
        load_model(str(broken))


def test_unknown_short_name_lists_choices():
    with pytest.raises(ModelLoadError, match="Shipped models"):
        load_model("no-such-model")


def test_melody_variant_is_refused(tiny_model_dir, tmp_path):
    melody = tmp_path / "melody"
    shutil.copytree(tiny_model_dir, melody)
    cfg = json.loads((melody / "config.json").read_text())
    cfg["model_type"] = "musicgen_melody"
    (melody / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="Melody is not supported"):
        load_model(str(melody))


def test_factory_sizes_are_configurable(tmp_path):
    path = build_tiny_musicgen(tmp_path / "m", hidden_size=48, num_layers=2, num_heads=4)
    a = load_model(str(path))
    assert (a.hidden_size, a.num_layers) == (48, 2)


def test_hub_id_loads_from_the_local_hf_cache(tiny_model_dir, tmp_path):
    """The hub-id path (`facebook/musicgen-small`) through from_pretrained, with a tiny model in a real cache layout."""
    cache = tmp_path / "hub"
    snapshot = cache / "models--facebook--musicgen-small" / "snapshots" / "0123abc"
    shutil.copytree(tiny_model_dir, snapshot)
    (cache / "models--facebook--musicgen-small" / "refs").mkdir()
    (cache / "models--facebook--musicgen-small" / "refs" / "main").write_text("0123abc")
    adapter = load_model("facebook/musicgen-small", hf_cache_dir=str(cache))
    assert adapter.model_id == "facebook/musicgen-small" and adapter.num_layers == 4


def test_load_adapter_honours_every_model_setting(tiny_model_dir, tmp_path):
    snapshot = install_in_hub_cache(tiny_model_dir, tmp_path / "hub", "facebook/musicgen-small")
    assert (snapshot / "config.json").exists()
    settings = ModelSettings(
        name="facebook/musicgen-small",
        hf_cache_dir=str(tmp_path / "hub"),
        dtype="bfloat16",
        attn_implementation="eager",
        device="cpu",
    )
    adapter = load_adapter(settings)
    assert adapter.model_id == "facebook/musicgen-small" and adapter.dtype == torch.bfloat16
    assert adapter.device == torch.device("cpu")
    assert adapter.model.decoder.config._attn_implementation == "eager"
    assert adapter.model.text_encoder.config._attn_implementation == "eager"
    with pytest.raises(ModelLoadError, match="not on this machine"):
        load_adapter(ModelSettings(name="facebook/musicgen-small", hf_cache_dir=str(tmp_path / "elsewhere")))


def test_tiny_config_has_musicgen_small_structure():
    config = tiny_musicgen_config()
    assert config.audio_encoder.sampling_rate == 32000 and config.audio_encoder.frame_rate == 50
    assert config.audio_encoder.num_quantizers == config.decoder.num_codebooks == 4
    assert config.decoder.pad_token_id == config.decoder.bos_token_id == config.decoder.vocab_size == 64
    with pytest.raises(ValueError, match="power of two"):
        tiny_musicgen_config(codebook_size=48)


def test_tiny_short_name_is_built_once(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERLIT_CACHE", str(tmp_path / "cache"))
    first = load_model("tiny")
    assert (tmp_path / "cache" / "tiny-musicgen-seed0" / "config.json").exists()
    second = load_model("tiny")
    assert first.model_id == second.model_id == "tiny"
    w1 = first.model.decoder.lm_heads[0].weight
    assert torch.equal(w1, second.model.decoder.lm_heads[0].weight)


def hub_layout_with_blobs(folder, cache, repo_id="facebook/musicgen-small", revision="f" * 40):
    """A hub cache as `hf download` writes it: snapshot files are links to blobs named by their sha256."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for item in folder.iterdir():
        if item.is_file():
            blob = repo / "blobs" / sha256_file(item)
            shutil.copy2(item, blob)
            (snapshot / item.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def test_weights_fingerprint_identifies_the_files(tiny_model_dir, tmp_path, monkeypatch):
    """Same files: same fingerprint in every dtype, process and place; one changed weight: another one."""
    monkeypatch.setenv("STEERLIT_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    a = load_model(str(folder))
    fp = weights_fingerprint(a)
    assert len(fp) == 16 and fp == folder_fingerprint(folder) == weights_fingerprint(a.model)
    assert weights_fingerprint(load_model(str(folder), dtype="bfloat16")) == fp
    assert folder_fingerprint(tiny_model_dir) == fp  # another folder, the same files
    memo = json.loads((tmp_path / "cache" / DIGESTS_FILE).read_text())
    assert memo[str((folder / "model.safetensors").resolve())]["sha256"] == sha256_file(
        folder / "model.safetensors"
    )
    assert {p.name for p in model_files(folder)} >= {"config.json", "model.safetensors", "tokenizer.json"}
    # a hub snapshot whose files link to blobs: the blob names are the digests (nothing is read)
    hub_layout_with_blobs(tiny_model_dir, tmp_path / "hub")
    hub = load_model("facebook/musicgen-small", hf_cache_dir=str(tmp_path / "hub"))
    assert weights_fingerprint(hub) == fp
    # retrained: one weight changes and is saved into the same folder
    with torch.no_grad():
        a.decoder_layers[1].fc2.weight[0, 0] += 1e-4
    assert weights_fingerprint(a) != fp and weights_fingerprint(a).startswith("p")  # changed in memory
    a.model.save_pretrained(folder)
    assert weights_fingerprint(load_model(str(folder))) not in (fp, weights_fingerprint(a))


def test_parameters_fingerprint_of_a_model_built_in_memory(tiny_adapter):
    model = copy.deepcopy(tiny_adapter.model)
    fp = weights_fingerprint(model)
    assert fp.startswith("p") and fp == parameters_fingerprint(model) == weights_fingerprint(
        copy.deepcopy(model)
    )
    with torch.no_grad():
        model.decoder.lm_heads[0].weight[3, 3] *= 2
    assert weights_fingerprint(model) != fp
