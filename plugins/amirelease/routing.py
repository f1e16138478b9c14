"""Toolchain routing: the bake and Terraform tasks run on the queue of the app's toolchain.

Airflow's cluster policy ``task_instance_mutation_hook`` (loaded from
``plugins/airflow_local_settings.py``; Airflow puts the plugins folder on ``sys.path`` before it
imports local settings) sets each such task instance's queue from the run's ``conf["app"]``
when the scheduler creates it, or re-creates it on a clear. One task per step therefore serves
every toolchain: no branch task, no task per toolchain, no join.

Runs in the scheduler, inside its transaction: no database access here, only the catalog
file of the app (a small local read, cached by modification time). What cannot be routed
(no app in conf, an unknown app, a file without a valid toolchain) keeps the task's own
queue (``default``): preflight then refuses the app before any toolchain task runs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

# Operators whose task instances go to the app's toolchain queue (by Airflow's task_type).
# tests/unit/test_routing.py keeps this in step with the operators' ``runs_on_toolchain``.
TOOLCHAIN_OPERATORS = frozenset({"BakeAmiOperator", "CheckInfrastructureOperator", "ApplyInfrastructureOperator"})
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_cache: dict[Path, tuple[float, str | None]] = {}


def toolchain_of(app: str, apps_dir: Path | None = None) -> str | None:
    """The toolchain queue an app's catalog file names, or None (tolerant: preflight reports)."""
    from amirelease.catalog import apps_dir as default_apps_dir  # light: no provider import

    if not _NAME.fullmatch(app):
        return None
    directory = apps_dir or default_apps_dir()
    for suffix in (".yaml", ".yml"):
        path = directory / f"{app}{suffix}"
        try:
            mtime = path.stat().st_mtime
        except OSError:
            continue
        cached = _cache.get(path)
        if cached and cached[0] == mtime:
            return cached[1]
        try:
            value = (yaml.safe_load(path.read_text()) or {}).get("toolchain")
        except (yaml.YAMLError, OSError, AttributeError):
            value = None
        toolchain = value if isinstance(value, str) and _NAME.fullmatch(value) else None
        _cache[path] = (mtime, toolchain)
        return toolchain
    return None


def route_task_instance(task_instance: Any, dag_run: Any) -> None:
    """The cluster policy's body: queue = the toolchain of the run's app, for toolchain tasks."""
    if dag_run is None or getattr(task_instance, "operator", None) not in TOOLCHAIN_OPERATORS:
        return
    conf = getattr(dag_run, "conf", None) or {}
    app = conf.get("app") if isinstance(conf, dict) else None
    toolchain = toolchain_of(app) if isinstance(app, str) else None
    if toolchain:
        task_instance.queue = toolchain
