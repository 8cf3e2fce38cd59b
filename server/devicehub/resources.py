"""Where the package finds the files it needs besides its modules, in a checkout and installed.

Those files are the Envoy template (``envoy.yaml``), the REST edge's Lua filter and API
docs page (``gateway/``), the schema migrations (``migrations/``) and what codegen
derives from ``proto/``: the ``devicehub.v1`` stubs, Envoy's descriptor set and the OpenAPI
document.

The repository keeps the first three at its top level, where they are edited and where
``envoy.yaml`` works as-is. So that a wheel is self-contained, its build step (``setup.py``)
copies them into the package as ``devicehub/bundled/``, under the same relative paths. Hence
two layouts, told apart by ``bundled/`` alone:

- installed from a wheel: ``devicehub/bundled/`` exists and is read;
- a checkout (the editable install ``scripts/bootstrap.sh`` makes): there is no
  ``bundled/``, and the files are read in place at the repository root, so an edit takes
  effect without reinstalling.

The generated code sits in ``devicehub/v1/`` in both layouts (codegen writes the descriptor
set and the OpenAPI document beside the stubs), so it needs no such choice.

This module is the only one that knows these locations, and it imports no other devicehub
module, so every layer (storage for the migrations, runtime for Envoy) may use it.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.util import find_spec
from pathlib import Path

# Repository paths (files or directories) that a wheel carries in devicehub/bundled/.
BUNDLED_PATHS = (
    "envoy.yaml",
    "gateway/rest_edge.lua",
    "gateway/docs.html",
    "gateway/docs.js",
    "migrations",
)


def _package_dir() -> Path:
    """The installed ``devicehub`` package as a directory: Envoy is given the descriptor set
    and the Lua filter by file name, so they must be real files (pip unpacks wheels)."""
    package = files("devicehub")
    if not isinstance(package, Path):
        raise ImportError(f"devicehub must be installed as a directory of files, not {package!r}")
    return package


PACKAGE_DIR = _package_dir()
DESCRIPTOR_SET = PACKAGE_DIR / "v1" / "devicehub.pb"
# The OpenAPI document of the REST surface, which codegen writes beside the descriptor set.
OPENAPI_DOCUMENT = PACKAGE_DIR / "v1" / "openapi.json"
BUNDLED_DIR = PACKAGE_DIR / "bundled"
# In a checkout the package is server/devicehub.
CHECKOUT_ROOT = PACKAGE_DIR.parents[1]

_DATA_ROOT = BUNDLED_DIR if BUNDLED_DIR.is_dir() else CHECKOUT_ROOT
ENVOY_TEMPLATE = _DATA_ROOT / "envoy.yaml"
LUA_FILTER = _DATA_ROOT / "gateway" / "rest_edge.lua"
MIGRATIONS_DIR = _DATA_ROOT / "migrations"
# A checkout keeps its data (SQLite file, secret, rendered Envoy config) in its own var/;
# an installed package has none (config.default_data_dir then picks a per-user directory).
CHECKOUT_DATA_DIR = None if BUNDLED_DIR.is_dir() else CHECKOUT_ROOT / "var"


# The API docs page (GET /api/docs, served by Envoy: envoy.yaml) is ours, bundled like the
# Lua filter; the Swagger UI files it loads come from the swagger-ui-py package, found
# without importing it (it would import its web-framework adapters). None when that package
# is missing: only Envoy needs it (runtime/gateway.py says so), not migrations or workers.
DOCS_PAGE = _DATA_ROOT / "gateway" / "docs.html"
_swagger_ui = find_spec("swagger_ui")
SWAGGER_UI_DIR = (
    Path(next(iter(_swagger_ui.submodule_search_locations))) / "static"
    if _swagger_ui is not None and _swagger_ui.submodule_search_locations
    else None
)
