"""The local AWS account and Vault the demo and the tests run against (see __main__.py)."""

import sys as _sys
from pathlib import Path as _Path

# The sandbox sets Vault up with the product's own code (amirelease.vault_bootstrap), as an
# operator would: make the plugins folder importable for `python -m sandbox` too.
_PLUGINS = str(_Path(__file__).resolve().parents[1] / "plugins")
if _PLUGINS not in _sys.path:
    _sys.path.insert(0, _PLUGINS)
