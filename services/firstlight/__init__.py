"""Firstlight: data-efficient computer vision, self-hosted."""

__version__ = "0.1.0"
