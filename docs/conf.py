"""Sphinx configuration of the ipcluster documentation: Markdown pages (MyST) and an API
reference generated from the docstrings. Built in the tests with warnings as errors:

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

project = "ipcluster"
copyright = "the ipcluster developers"
release = version = __import__("ipcluster").__version__

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3  # "[text](page.md#a-heading)" links

# `Name` in docstrings is a reference to a Python object; names not documented here (a
# private helper, a stdlib class) are shown as code rather than warned about.
default_role = "py:obj"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "alabaster"
html_title = "ipcluster"
html_theme_options = {"description": "Interactive parallel computing for Python"}
html_static_path = ["_static"]
html_css_files = ["custom.css"]
