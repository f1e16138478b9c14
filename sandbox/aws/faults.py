"""Fault injection: make chosen AWS calls fail, throttle, come back late, cut short (no
NextToken) or lose their answer (done, but answered 500), refreshes fail, SSM commands fail.

Faults are consumed by the WSGI middleware (``middleware.py``) before the call
reaches moto, and rendered in the protocol the client used, so botocore
raises a ``ClientError`` with the chosen code.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

# Throttling error codes AWS uses, per service (IAM-style service prefix).
THROTTLE_CODES = {
    "ec2": ("RequestLimitExceeded", 503),
    "autoscaling": ("Throttling", 400),
    "elasticloadbalancing": ("Throttling", 400),
    "cloudwatch": ("Throttling", 400),
    "sts": ("Throttling", 400),
    "iam": ("Throttling", 400),
}
JSON_THROTTLE = ("ThrottlingException", 400)


@dataclass
class CallFault:
    action: str
    service: str | None
    code: str
    message: str | None
    times: int
    status: int
    throttle: bool = False
    match: str | None = None  # only requests whose (URL-decoded) body or query contains this
    skip: int = 0  # let this many matching calls through first
    delay: float = 0.0  # > 0: not an error, the call is answered this many seconds late
    truncate: bool = False  # not an error: the answer loses its NextToken (a listing cut short)
    keep: int | None = None  # with truncate: only the first ``keep`` listed items stay (0: an empty page)
    lose: bool = False  # not before the call: moto does it, then its answer is replaced by a 500 InternalError

    def matches(self, service: str, action: str, request_text: str = "") -> bool:
        return (
            self.times > 0
            and self.action == action
            and (self.service is None or self.service == service)
            and (self.match is None or self.match in request_text)
        )


@dataclass
class RefreshFault:
    asg_name: str
    percent: int
    reason: str


@dataclass
class SsmFault:
    instance_id: str
    exit_code: int = 1
    stdout: str = ""
    stderr: str = "boom"


@dataclass
class Faults:
    calls: list[CallFault] = field(default_factory=list)
    refreshes: dict[str, RefreshFault] = field(default_factory=dict)
    ssm: dict[str, SsmFault] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    # -- the public control surface ------------------------------------------------
    def fail(
        self,
        action: str,
        code: str = "InternalError",
        message: str | None = None,
        times: int = 1,
        status: int = 400,
        match: str | None = None,
        skip: int = 0,
    ) -> None:
        """The next ``times`` calls of ``action`` fail with ``code``.

        ``action`` is the API action name (``"CreateTags"``) or prefixed with the
        service (``"ec2:CreateTags"``) when the name is ambiguous. ``match`` narrows the
        fault to requests whose decoded parameters contain that text (e.g. a tag value);
        ``skip`` lets that many matching calls succeed first.
        """
        service, _, name = action.rpartition(":")
        with self._lock:
            self.calls.append(
                CallFault(name, service or None, code, message, int(times), int(status), match=match, skip=int(skip))
            )

    def throttle(self, action: str, times: int = 1) -> None:
        """The next ``times`` calls of ``action`` are throttled (code chosen per service)."""
        service, _, name = action.rpartition(":")
        with self._lock:
            self.calls.append(CallFault(name, service or None, "", None, int(times), 0, throttle=True))

    def delay(self, action: str, seconds: float, times: int = 1, match: str | None = None, skip: int = 0) -> None:
        """The next ``times`` calls of ``action`` are answered ``seconds`` late (and then normally):
        a slow AWS, so that a test can kill a task while a tool waits on it."""
        service, _, name = action.rpartition(":")
        with self._lock:
            self.calls.append(
                CallFault(
                    name, service or None, "", None, int(times), 0, match=match, skip=int(skip), delay=float(seconds)
                )
            )

    def truncate(
        self,
        action: str,
        times: int = 1,
        match: str | None = None,
        skip: int = 0,
        empty: bool = False,
        keep: int | None = None,
    ) -> None:
        """The next ``times`` answers of ``action`` come back without their ``NextToken``: the first
        page only, otherwise in AWS's shape, as if it were the whole listing (stock moto 5.2.5 does
        this to ``DescribeLaunchTemplateVersions``: 200 entries, no token). ``keep``: only the
        first ``keep`` items of the page stay (a short page); ``empty``: none (``keep=0``, a
        successful answer that lists nothing)."""
        service, _, name = action.rpartition(":")
        with self._lock:
            self.calls.append(
                CallFault(
                    name,
                    service or None,
                    "",
                    None,
                    int(times),
                    0,
                    match=match,
                    skip=int(skip),
                    truncate=True,
                    keep=0 if empty else (None if keep is None else int(keep)),
                )
            )

    def lose_answer(self, action: str, times: int = 1, match: str | None = None, skip: int = 0) -> None:
        """The next ``times`` calls of ``action`` are done, and then answered ``500 InternalError``
        instead of their answer: AWS's documented "the request may have succeeded" (or a connection
        lost on the way back). The SDKs send the call again, which meets the changed account: a
        second ``RevokeSecurityGroupEgress`` finds the rule gone (``InvalidPermission.NotFound``)."""
        service, _, name = action.rpartition(":")
        with self._lock:
            self.calls.append(
                CallFault(name, service or None, "", None, int(times), 0, match=match, skip=int(skip), lose=True)
            )

    def fail_refresh_at(
        self, asg_name: str, percent: int, reason: str = "Instance refresh failed (injected fault)."
    ) -> None:
        """The next instance refresh of ``asg_name`` fails when it reaches ``percent``."""
        with self._lock:
            self.refreshes[asg_name] = RefreshFault(asg_name, int(percent), reason)

    def fail_ssm(self, instance_id: str, exit_code: int = 1, stdout: str = "", stderr: str = "boom") -> None:
        """SSM commands sent to ``instance_id`` ("*": any instance) report Failed with that output."""
        with self._lock:
            self.ssm[instance_id] = SsmFault(instance_id, int(exit_code), stdout, stderr)

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()
            self.refreshes.clear()
            self.ssm.clear()

    # -- used by the server --------------------------------------------------------
    def _take(
        self, wanted: Callable[[CallFault], bool], service: str, action: str, request_text: str
    ) -> CallFault | None:
        """The first fault of that kind matching this call, counted as used (``skip`` first lets
        calls through); None when none applies."""
        with self._lock:
            for fault in self.calls:
                if wanted(fault) and fault.matches(service, action, request_text):
                    if fault.skip > 0:
                        fault.skip -= 1
                        continue
                    fault.times -= 1
                    self.calls = [f for f in self.calls if f.times > 0]
                    return fault
        return None

    def take_delay(self, service: str, action: str, request_text: str = "") -> float:
        """Seconds to hold this call back (0: none)."""
        fault = self._take(lambda f: f.delay > 0, service, action, request_text)
        return fault.delay if fault else 0.0

    def take_lose(self, service: str, action: str, request_text: str = "") -> bool:
        """True: do this call, then lose its answer (a 500 instead)."""
        return self._take(lambda f: f.lose, service, action, request_text) is not None

    def take_truncate(self, service: str, action: str, request_text: str = "") -> tuple[bool, int | None]:
        """(cut this answer: lose its NextToken, how many listed items to keep: None = all)."""
        fault = self._take(lambda f: f.truncate, service, action, request_text)
        return (True, fault.keep) if fault else (False, None)

    def take_call_fault(
        self, service: str, action: str, json_protocol: bool, request_text: str = ""
    ) -> tuple[str, str, int] | None:
        fault = self._take(lambda f: f.delay == 0 and not f.truncate and not f.lose, service, action, request_text)
        if fault is None:
            return None
        if fault.throttle:
            code, status = JSON_THROTTLE if json_protocol else THROTTLE_CODES.get(service, ("Throttling", 400))
            return code, "Rate exceeded", status
        return fault.code, fault.message or f"{action} failed (injected fault).", fault.status

    def take_refresh_fault(self, asg_name: str) -> RefreshFault | None:
        with self._lock:
            return self.refreshes.pop(asg_name, None)

    def peek_refresh_fault(self, asg_name: str) -> RefreshFault | None:
        with self._lock:
            return self.refreshes.get(asg_name)

    def ssm_fault(self, instance_id: str) -> SsmFault | None:
        """The fault for that instance, or the one registered for "*" (every instance)."""
        with self._lock:
            return self.ssm.get(instance_id) or self.ssm.get("*")

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": [asdict(f) for f in self.calls],
                "refreshes": [asdict(f) for f in self.refreshes.values()],
                "ssm": [asdict(f) for f in self.ssm.values()],
            }

    def apply(self, spec: dict[str, Any]) -> None:
        """Apply one fault given as JSON (the HTTP control surface)."""
        spec = dict(spec)
        kind = spec.pop("kind", "fail")
        if kind == "fail":
            self.fail(**spec)
        elif kind == "throttle":
            self.throttle(**spec)
        elif kind == "delay":
            self.delay(**spec)
        elif kind == "truncate":
            self.truncate(**spec)
        elif kind == "lose":
            self.lose_answer(**spec)
        elif kind == "refresh":
            self.fail_refresh_at(**spec)
        elif kind == "ssm":
            self.fail_ssm(**spec)
        else:
            raise ValueError(f"unknown fault kind {kind!r}; use fail, throttle, delay, truncate, lose, refresh or ssm")
