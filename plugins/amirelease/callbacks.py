"""Task callbacks shared by the release DAGs."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def remember_failure(context: Any) -> None:
    """on_failure_callback: keep the failed task's error (secrets redacted) in XCom key
    'failure', so the record task can put the reason in the ledger."""
    exc = context.get("exception")
    if exc is None:
        return
    from airflow.sdk.log import redact  # type: ignore[attr-defined]  # the masker that redacts task logs

    message = str(redact(f"{type(exc).__name__}: {exc}"))[:2000]
    try:
        context["ti"].xcom_push(key="failure", value=message)
    except Exception as err:  # noqa: BLE001 - a callback must never hide the task's own failure
        log.warning("could not record the failure reason: %s", err)
