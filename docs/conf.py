"""Sphinx configuration: Markdown pages (MyST), API pages from the Google-style docstrings."""

import os
import re
import sys

sys.path.insert(0, os.path.abspath(".."))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

project = "imnn"
author = "the imnn developers"
copyright = "2026, the imnn developers"
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax", "sphinx.ext.viewcode"]
myst_enable_extensions = ["dollarmath", "amsmath"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = ["_static"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
nitpicky = False


# Docstrings write shapes as plain text — float(n, *input_shape), |F| — which reStructuredText would
# read as emphasis and substitutions: show them as literals instead.
SHAPE = re.compile(r"(?<![`\w])((?:float|int|bool)\((?:[^()]|\([^()]*\))*\))")
DETERMINANT = re.compile(r"(?<![`\\])\|(F|C|Σ|invC|F⁻¹)\|")


def literal_shapes(app, what, name, obj, options, lines):
    for i, line in enumerate(lines):
        line = SHAPE.sub(r"``\1``", line)
        lines[i] = DETERMINANT.sub(r"\|\1\|", line)


def setup(app):
    app.connect("autodoc-process-docstring", literal_shapes)
