import pytest
import torch

from steerlit.directions.io import DirectionFileError, DirectionSet, load_directions, save_directions
from steerlit.models.fingerprint import weights_fingerprint
from steerlit.models.sites import attention_shape, head_site


def test_round_trip_and_validation(tmp_path, tiny_adapter):
    vecs = {("diffmean", f"resid_post.{i}"): torch.randn(32) for i in range(4)}
    vecs[("logistic", "resid_post.1")] = torch.randn(32)
    path = save_directions(
        tmp_path / "d.safetensors",
        vecs,
        model_id=tiny_adapter.model_id,
        concept="tempo",
        position="mean",
        n_per_class={"fast": 3, "slow": 4},
    )
    ds = load_directions(path, tiny_adapter)
    assert ds.methods == ["diffmean", "logistic"]
    assert torch.equal(ds.get("logistic", "resid_post.1"), vecs[("logistic", "resid_post.1")])
    assert ds.metadata["concept"] == "tempo" and ds.metadata["hidden_size"] == "32"
    assert '"fast": 3' in ds.metadata["n_per_class"] and "steerlit_version" in ds.metadata
    assert not list(tmp_path.glob(".*tmp*"))


def test_bad_files(tmp_path, tiny_adapter):
    with pytest.raises(DirectionFileError, match="NaN or inf"):
        save_directions(
            tmp_path / "n.safetensors", {("m", "resid_post.0"): torch.full((32,), float("nan"))}, model_id="x"
        )
    save_directions(tmp_path / "w.safetensors", {("m", "resid_post.0"): torch.ones(48)}, model_id="other")
    with pytest.raises(DirectionFileError, match="hidden size 32"):
        load_directions(tmp_path / "w.safetensors", tiny_adapter)
    save_directions(
        tmp_path / "s.safetensors", {("m", "resid_post.9"): torch.ones(32)}, model_id=tiny_adapter.model_id
    )
    with pytest.raises(ValueError, match="out of range"):
        load_directions(tmp_path / "s.safetensors", tiny_adapter)
    with pytest.raises(DirectionFileError, match="does not exist"):
        load_directions(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(DirectionFileError, match="not a readable"):
        load_directions(tmp_path / "junk.safetensors")
    ds = load_directions(tmp_path / "s.safetensors")
    with pytest.raises(DirectionFileError, match="No directions for method"):
        ds.for_method("probe")


def test_directions_of_another_model_need_the_override(tmp_path, tiny_adapter):
    """Issue 23: a file whose metadata names another model with the same hidden size went through."""
    vecs = {("diffmean", "resid_post.1"): torch.randn(32)}
    other = save_directions(tmp_path / "other.safetensors", vecs, model_id="facebook/musicgen-small")
    with pytest.raises(DirectionFileError) as err:
        load_directions(other, tiny_adapter)
    message = str(err.value)
    assert (
        str(other) in message
        and "'facebook/musicgen-small'" in message
        and repr(tiny_adapter.model_id) in message
    )
    assert "allow_other_model=True" in message and "steerlit fit" in message
    assert load_directions(other, tiny_adapter, allow_other_model=True).methods == ["diffmean"]
    assert DirectionSet.load(other, tiny_adapter, allow_other_model=True).methods == ["diffmean"]
    assert load_directions(other).metadata["model_id"] == "facebook/musicgen-small"  # no model: no check
    # fingerprints decide when both sides have one: the same weights under another id pass ...
    ours = weights_fingerprint(tiny_adapter)
    moved = save_directions(
        tmp_path / "moved.safetensors", vecs, model_id="old/folder", weights_fingerprint=ours
    )
    assert load_directions(moved, tiny_adapter).metadata["weights_fingerprint"] == ours
    # ... and other weights under the same id (a retrained checkpoint) are refused
    retrained = save_directions(
        tmp_path / "retrained.safetensors", vecs, model_id=tiny_adapter.model_id, weights_fingerprint="0" * 16
    )
    with pytest.raises(DirectionFileError, match=f"weights fingerprint {'0' * 16}.*has {ours}"):
        load_directions(retrained, tiny_adapter)
    assert load_directions(retrained, tiny_adapter, allow_other_model=True)


def test_head_site_directions_are_checked_against_head_dim(tiny_adapter):
    heads, head_dim = attention_shape(tiny_adapter.decoder_layers)
    assert head_dim != tiny_adapter.hidden_size  # the test would not tell the two widths apart otherwise
    meta = {"model_id": tiny_adapter.model_id}
    DirectionSet({("diffmean", head_site(1, heads - 1)): torch.randn(head_dim)}, meta).validate(tiny_adapter)
    wide = DirectionSet({("diffmean", head_site(1, 0)): torch.randn(tiny_adapter.hidden_size)}, meta)
    with pytest.raises(DirectionFileError, match=f"attn_head.1.0 of model .* has head_dim {head_dim}"):
        wide.validate(tiny_adapter)
    narrow = DirectionSet({("diffmean", "resid_post.1"): torch.randn(head_dim)}, meta)
    with pytest.raises(DirectionFileError, match=f"has hidden size {tiny_adapter.hidden_size}"):
        narrow.validate(tiny_adapter)
    with pytest.raises(ValueError, match="head"):
        DirectionSet({("diffmean", head_site(1, heads)): torch.randn(head_dim)}, meta).validate(tiny_adapter)
