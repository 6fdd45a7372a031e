import pytest
from torch import nn

from steerlit.models.sites import (
    Site,
    UnknownSiteError,
    attention_shape,
    check_site,
    head_columns,
    list_head_sites,
    list_sites,
    parse_site,
    parse_sites,
    site_hook_point,
    site_width,
)


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


def test_head_sites_parse_list_and_range():
    site = parse_site("attn_head.2.3", 4, 4)
    assert site == Site("attn_head", 2, 3) and site.is_head and site.name == "attn_head.2.3"
    assert list_head_sites(2, 2) == ["attn_head.0.0", "attn_head.0.1", "attn_head.1.0", "attn_head.1.1"]
    assert list_head_sites(4, 2, layers=[3]) == ["attn_head.3.0", "attn_head.3.1"]
    assert list_sites(1) == ["resid_post.0", "attn_out.0", "xattn_out.0", "mlp_out.0"]  # layer kinds only
    with pytest.raises(UnknownSiteError, match="4 attention heads"):
        parse_site("attn_head.1.4", 4, 4)
    with pytest.raises(UnknownSiteError, match="attn_head.<layer>.<head>"):
        parse_site("attn_head.1", 4)
    with pytest.raises(UnknownSiteError, match="resid_post.<layer>"):
        parse_site("resid_post.1.0", 4)


def test_head_sites_hook_the_output_projection_input(tiny_adapter):
    layers = tiny_adapter.decoder_layers
    assert attention_shape(layers) == (4, 8)
    site = check_site(layers, "attn_head.1.2")
    module, point = site_hook_point(layers, site)
    assert module is layers[1].self_attn.out_proj and point == "input"
    assert head_columns(layers, site) == slice(16, 24)
    assert site_width(layers, site) == 8 and site_width(layers, Site("resid_post", 1)) == 32
    assert site_hook_point(layers, Site("mlp_out", 0)) == (layers[0].fc2, "output")
    with pytest.raises(UnknownSiteError, match="4 attention heads"):
        check_site(layers, "attn_head.0.7")
