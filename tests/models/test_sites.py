import pytest
from torch import nn

from steerlit.models.sites import Site, UnknownSiteError, list_sites, parse_site, parse_sites


def test_parse_and_list():
    assert parse_site("resid_post.3", 4) == Site("resid_post", 3)
    assert parse_site(" mlp_out.0 ", 4).name == "mlp_out.0"
    assert list_sites(2, ("attn_out",)) == ["attn_out.0", "attn_out.1"]


@pytest.mark.parametrize(
    "name, message",
    [
        ("resid_post.4", "out of range"),
        ("resid_pre.1", "Unknown site kind"),
        ("layer3", "Malformed"),
        ("resid_post.-1", "Malformed"),
    ],
)
def test_bad_sites_list_valid_names(name, message):
    with pytest.raises(UnknownSiteError, match=message) as err:
        parse_site(name, 4)
    assert "resid_post.0..resid_post.3" in str(err.value)


def test_duplicates_and_empty_are_errors():
    with pytest.raises(UnknownSiteError, match="Duplicated"):
        parse_sites(["resid_post.1", "resid_post.1"], 4)
    with pytest.raises(UnknownSiteError, match="No sites"):
        parse_sites([], 4)


def test_site_modules_are_the_documented_ones(tiny_adapter):
    block = tiny_adapter.decoder_layers[2]
    assert tiny_adapter.site_module("resid_post.2") is block
    assert tiny_adapter.site_module("attn_out.2") is block.self_attn
    assert tiny_adapter.site_module("xattn_out.2") is block.encoder_attn
    assert tiny_adapter.site_module("mlp_out.2") is block.fc2
    assert isinstance(tiny_adapter.site_module("mlp_out.2"), nn.Linear)
