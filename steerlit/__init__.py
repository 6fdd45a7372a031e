"""steerlit: interpretable, direction-based steering of text-to-music models."""

__version__ = "0.1.0"
