"""Sphinx configuration: ``sphinx-build -W -b html docs docs/_build/html`` (extra ``[docs]``)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

from webhook_receiver.__about__ import __version__  # noqa: E402

project = "webhook_receiver"
author = "the webhook_receiver authors"
copyright = "2026, the webhook_receiver authors"  # noqa: A001 - Sphinx's name
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx_click",
    "pallets_sphinx_themes",
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_preserve_defaults = True
# No network at build time: references to Flask and SQLAlchemy stay plain text.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}

html_theme = "flask"
html_title = f"webhook_receiver {version}"
html_context = {"project_links": []}
html_show_sourcelink = False
exclude_patterns = ["_build"]
