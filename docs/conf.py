"""Sphinx configuration of the sadp-core documentation.

Build from the repository root after installing the package into the same Python
(``pip install .``): this file does not touch ``sys.path``, so the pages document the
installed ``sadp_core``, exactly as users get it.

    sphinx-build -W --keep-going -b html docs docs/_build/html
    sphinx-build -W --keep-going -b doctest docs docs/_build/doctest
"""

from __future__ import annotations

import re

import sadp_core

project = "sadp-core"
author = "The sadp-core developers"
copyright = "the sadp-core developers"
release = sadp_core.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "myst_parser",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build"]
nitpicky = False

# -- MyST: Markdown pages with $...$, $$...$$ and amsmath environments --------------------
myst_enable_extensions = ["dollarmath", "amsmath"]

# -- autodoc and napoleon (the docstrings are Google style) ---------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
# Keep the name of the array alias (any Array API array) in signatures instead of "Any".
autodoc_type_aliases = {"Array": "Array"}
maximum_signature_line_length = 88
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# "Attributes:" sections become attribute entries; the API page therefore documents
# Plan and PrunerStats without :members: (autodoc would add "Alias for field number 0").
napoleon_use_ivar = False

# -- doctest ----------------------------------------------------------------------------------
# Only the explicit {doctest} blocks of these pages run here. The ">>>" examples in the
# docstrings, which autodoc copies into the API page, are run by pytest --doctest-modules
# in their own module namespace (nox -s core).
doctest_test_doctest_blocks = ""

# -- HTML -------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"sadp-core {release}"


# Sphinx renders an alias nested in a generic (tuple[Array, Array]) as
# "tuple[TypeAliasForwardRef('Array'), ...]"; show the plain alias name instead.
_FORWARD_REF = re.compile(r"TypeAliasForwardRef\('([^']*)'\)")


def _tidy_aliases(app, what, name, obj, options, signature, return_annotation):
    def tidy(text):
        return _FORWARD_REF.sub(r"\1", text) if text else text

    return tidy(signature), tidy(return_annotation)


def setup(app):
    app.connect("autodoc-process-signature", _tidy_aliases)
