"""Sphinx configuration of the sparse_optax docs (`make docs`).

The build is offline: cross-references to Optax, JAX, Flax, NumPy and Python resolve from the
small inventories in `_inventories/` (see `_inventories/build.py`), and the notebooks are rendered as they
are committed, never run.
"""

import os
import re
import sys
from pathlib import Path

from sphinx.util import inspect as sphinx_inspect
from sphinx.util import logging

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # sparse_optax, models/, train/, benchmarks/ as in a checkout
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # train/ imports TensorFlow: fewer logs

import sparse_optax  # noqa: E402  (after the path above)

project = "sparse_optax"
author = "The sparse_optax authors"
copyright = "the sparse_optax authors, Apache-2.0"  # noqa: A001  (Sphinx's name)
release = version = sparse_optax.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.napoleon",
]

exclude_patterns = ["_build", "jupyter_execute", "_inventories", "**/.ipynb_checkpoints",
                    "README.md"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}

# -- Markdown and notebooks -----------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # the notebooks are shown as committed; the tests run them

# -- API reference --------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
# The annotations name these aliases; keep the names rather than the unions behind them.
autodoc_type_aliases = {
    "optax.ScalarOrSchedule": "optax.ScalarOrSchedule",
    "optax.GradientTransformation": "optax.GradientTransformation",
    "optax.GradientTransformationExtraArgs": "optax.GradientTransformationExtraArgs",
    "jax.Array": "jax.Array",
    "optax.Params": "optax.Params",
    "optax.Updates": "optax.Updates",
    "optax.OptState": "optax.OptState",
    "optax.Schedule": "optax.Schedule",
    "chex.ArrayTree": "chex.ArrayTree",
    "chex.Array": "chex.Array",
    "chex.Numeric": "chex.Numeric",
    "_types.Mask": "sparse_optax._types.Mask",
    "_types.Weighting": "sparse_optax.Weighting",
    "_types.Params": "optax.Params",
    "Params": "optax.Params",
    "WeightingState": "typing.Any",
    "nnx.Module": "flax.nnx.Module",
    "nnx.Rngs": "flax.nnx.Rngs",
    "nnx.Linear": "flax.nnx.Linear",
    "nnx.Conv": "flax.nnx.Conv",
    "nnx.LinearGeneral": "flax.nnx.LinearGeneral",
    "sparse.BCOO": "jax.experimental.sparse.BCOO",
    "PathLike": "train.run_folder.PathLike",
    "run_folder.PathLike": "train.run_folder.PathLike",
    "epath.Path": "etils.epath.Path",
    "epath.PathLike": "etils.epath.PathLike",
    "ml_collections.ConfigDict": "ml_collections.ConfigDict",
}
# Annotations that are already evaluated name a class where it is defined; the docs name it
# where it is documented.
PUBLIC_NAMES = {
    "optax._src.base.": "optax.",
    "jax.jaxlib._jax.Array": "jax.Array",
    "flax.nnx.module.Module": "flax.nnx.Module",
    "flax.nnx.rnglib.Rngs": "flax.nnx.Rngs",
    "ml_collections.config_dict.config_dict.ConfigDict": "ml_collections.ConfigDict",
    "etils.epath.abstract_path.Path": "etils.epath.Path",
}
# Names a NamedTuple's signature leaves unevaluated (its ``__new__`` is built outside the
# module that defines the aliases).
BARE_NAMES = {"Params": "optax.Params", "WeightingState": "typing.Any"}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = False  # an attribute's type is in its description, as written

intersphinx_mapping = {
    # name: (where the docs live, the inventory kept here instead of fetching theirs)
    "python": ("https://docs.python.org/3/", "_inventories/python.inv"),
    "numpy": ("https://numpy.org/doc/stable/", "_inventories/numpy.inv"),
    "jax": ("https://docs.jax.dev/en/latest/", "_inventories/jax.inv"),
    "optax": ("https://optax.readthedocs.io/en/latest/", "_inventories/optax.inv"),
    "flax": ("https://flax.readthedocs.io/en/latest/", "_inventories/flax.inv"),
}
intersphinx_timeout = 1  # never waited on: every inventory above is a local file

nitpicky = True  # `make docs` passes -n too: a reference that does not resolve fails the build
# Names with no page to link to. Optax does not document its ScalarOrSchedule alias (a float,
# an array or a schedule); ml_collections and etils are not among the inventories kept here.
nitpick_ignore = [
    ("py:class", "optax.ScalarOrSchedule"),
    ("py:class", "ml_collections.ConfigDict"),
    ("py:class", "etils.epath.Path"),
    ("py:class", "etils.epath.PathLike"),
]

# -- HTML -----------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = f"sparse_optax {release}"
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
html_static_path = []


# -- The notebooks, copied in from ../notebooks -----------------------------------------------

NOTEBOOKS = DOCS / "_notebooks"


def _copy_notebooks() -> None:
  """The repository's notebooks under docs/_notebooks/, rewritten only when they changed (so an
  unchanged notebook is not re-read), and none left behind that ../notebooks no longer has.

  A notebook links a docs page as ``../docs/page.md``, which is right from ``notebooks/`` (on
  GitHub, in Jupyter); from ``docs/_notebooks/`` the same page is ``../page.md``."""
  NOTEBOOKS.mkdir(exist_ok=True)
  sources = {p.name: p for p in sorted((ROOT / "notebooks").glob("*.ipynb"))}
  for stale in NOTEBOOKS.glob("*.ipynb"):
    if stale.name not in sources:
      stale.unlink()
  for name, source in sources.items():
    target = NOTEBOOKS / name
    text = source.read_text(encoding="utf-8").replace("](../docs/", "](../")
    if not target.exists() or target.read_text(encoding="utf-8") != text:
      target.write_text(text, encoding="utf-8")


_copy_notebooks()


# -- Every public name documented ------------------------------------------------------------


def _check_api_coverage(app, env) -> None:
  """A warning (an error under -W) for each name in ``sparse_optax.__all__`` that no page
  documents, so a new public symbol cannot ship without its reference entry."""
  documented = set(env.get_domain("py").objects)
  for name in sparse_optax.__all__:
    if f"sparse_optax.{name}" not in documented:
      logging.getLogger(__name__).warning(
          "sparse_optax.%s is public (in __all__) but no page documents it", name)




def _check_inventories(app) -> None:
  """A warning if an inventory here no longer matches its readable listing."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("_inventories_build",
                                                DOCS / "_inventories" / "build.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  for path in module.stale():
    logging.getLogger(__name__).warning(
        "%s does not match its .txt: run python docs/_inventories/build.py", path.name)


def _alias_names(app, what, name, obj, options, signature, return_annotation):
  """Writes an aliased annotation inside a union (``optax.ScalarOrSchedule | None``) by its
  name: Sphinx leaves the wrapper's repr there, ``TypeAliasForwardRef('...')``. A Flax NNX
  module's class signature is its metaclass's ``(*args, **kwargs)``: its ``__init__``'s instead."""
  del name, options  # unused
  if what == "class" and signature == "(*args: Any, **kwargs: Any)" and "__init__" in vars(obj):
    init = sphinx_inspect.signature(obj.__init__, bound_method=True,
                                    type_aliases=app.config.autodoc_type_aliases)
    signature = sphinx_inspect.stringify_signature(init, show_return_annotation=False)
  def unwrap(text):
    if not text:
      return text
    text = re.sub(r"TypeAliasForwardRef\('([^']*)'\)", r"\1", text)
    for defined, documented in PUBLIC_NAMES.items():
      text = text.replace(defined, documented)
    for bare, documented in BARE_NAMES.items():
      text = re.sub(rf"(?<![\w.]){bare}(?!\w)", documented, text)
    return text
  return unwrap(signature), unwrap(return_annotation)


def setup(app):
  app.connect("autodoc-process-signature", _alias_names)
  app.connect("builder-inited", _check_inventories)
  app.connect("env-check-consistency", _check_api_coverage)
