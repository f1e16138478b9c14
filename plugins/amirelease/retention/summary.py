"""The run's closing summary: which account x region tasks succeeded and which failed.

A retention task that fails (an account whose role cannot be assumed, a run that stopped, a
report that could not be written) returns nothing; the others return their summary (report.py
``summary``, with ``account`` when the policy names accounts). The summary task compares the
two lists, logs one line per task and fails, naming every failed one, so the run's state and
its last task say the same thing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from amirelease.errors import RetentionError

log = logging.getLogger(__name__)


def _key(account: str | None, region: str | None) -> tuple[str, str]:
    return (account or "", region or "")


def label(account: str | None, region: str | None) -> str:
    return f"account {account}, region {region}" if account else f"region {region}"


def summarise(targets: Iterable[Mapping[str, Any]], results: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """``{"succeeded": [...], "failed": [...]}`` (labels); raises RetentionError if any failed."""
    done = {_key(r.get("account"), r.get("region")): r for r in results}
    succeeded: list[str] = []
    failed: list[dict[str, Any]] = []
    for index, target in enumerate(targets):
        account = (target.get("account") or {}).get("name")
        region = target.get("region_name")
        result = done.get(_key(account, region))
        if result is None:
            failed.append({"account": account, "region": region, "map_index": index})
            log.error("FAILED  %s (task retention, map index %d: its log says why)", label(account, region), index)
        else:
            counts = ", ".join(f"{k} {v}" for k, v in sorted((result.get("counts") or {}).items()) if v)
            succeeded.append(label(account, region))
            log.info("ok      %s: %s", label(account, region), counts or "nothing to do")
    if failed:
        names = "; ".join(label(f["account"], f["region"]) for f in failed)
        raise RetentionError(
            f"retention failed in {len(failed)} of {len(failed) + len(succeeded)} account/region task(s): {names}"
            + (f" (the other {len(succeeded)} completed)" if succeeded else ""),
            resource="DAG run (task retention, mapped)",
            fix="open the failed task(s) of `retention` (map index "
            + ", ".join(str(f["map_index"]) for f in failed)
            + ") for the reason; the other accounts were not affected and the next run tries again",
        )
    return {"succeeded": succeeded, "failed": []}
