"""Model loading, the site map and tiny debug models."""

from steerlit.models.adapter import MusicGenAdapter
from steerlit.models.loading import ModelLoadError, load_adapter, load_model
from steerlit.models.sites import SITE_KINDS, Site, UnknownSiteError, list_sites, parse_site

__all__ = [
    "SITE_KINDS",
    "ModelLoadError",
    "MusicGenAdapter",
    "Site",
    "UnknownSiteError",
    "list_sites",
    "load_adapter",
    "load_model",
    "parse_site",
]
