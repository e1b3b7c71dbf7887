"""Sphinx configuration: the guides (Markdown, through MyST) and the API reference built from the docstrings.

Built by ``make docs`` with warnings as errors, so a broken reference, a malformed docstring or a page that
is in no table of contents fails the build.
"""

from __future__ import annotations

import nestopt

project = "nestopt"
author = "the nestopt developers"
release = nestopt.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_parser",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "site"]
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "furo"
html_title = f"nestopt {release}"
