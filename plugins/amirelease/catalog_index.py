"""What DAG files read from the app catalog at parse time: the apps' file names (the trigger
form's dropdown), the toolchains they name (routing), and the version pattern (the form's check).

Kept apart from catalog.py so that parsing a DAG file does not build the catalog's dataclasses,
regexes and schema (tests/unit/test_parse_imports.py): only listings of local files here.
catalog.py re-exports every name, so ``catalog.app_names`` etc. still work.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]

# Exactly ASCII semantic versions. Written for both Python's `re` (jsonschema, the REST API)
# and the browser's RegExp (the trigger form): [0-9] not \d (which matches any Unicode digit
# in Python), and `(?![\s\S])` (end of input) instead of `$`, which in Python also matches
# before a trailing newline.
VERSION_PATTERN = r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z]+(\.[0-9A-Za-z]+)*)?(?![\s\S])"


def include_dir() -> Path:
    """The folder with apps/, cookbooks/, packer/, terraform/ (AMI_RELEASE_INCLUDE_DIR or include/)."""
    return Path(os.environ.get("AMI_RELEASE_INCLUDE_DIR") or REPO_ROOT / "include")


def apps_dir() -> Path:
    return Path(os.environ.get("AMI_RELEASE_APPS_DIR") or include_dir() / "apps")


def app_names(directory: Path | None = None) -> list[str]:
    """Names for the trigger form's dropdown: file names only, cheap and safe at parse time."""
    directory = directory or apps_dir()
    return sorted(p.stem for p in directory.glob("*.y*ml"))


def toolchains(directory: Path | None = None) -> list[str]:
    """Distinct toolchain queues named by catalog files, for routing the bake and Terraform tasks.

    Tolerant on purpose (used at DAG parse time): an unreadable file is skipped here and
    reported by preflight, so one broken file cannot take the release DAG down for every app.
    """
    directory = directory or apps_dir()
    found = set()
    for path in directory.glob("*.y*ml"):
        try:
            value = (yaml.safe_load(path.read_text()) or {}).get("toolchain")
        except (yaml.YAMLError, OSError, AttributeError):
            continue
        if isinstance(value, str) and re.fullmatch(r"[a-z0-9][a-z0-9_-]*", value):
            found.add(value)
    return sorted(found)
