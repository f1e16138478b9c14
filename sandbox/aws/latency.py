"""AWS's round trip, modelled: every AWS request is answered after a delay (fixed or drawn from
a range), slept **outside** the lock that serialises moto, so concurrent requests wait side by
side as they do against AWS, where a client's concurrency pays.

    sb.configure(latency_ms=50)            # every request: 50 ms
    sb.configure(latency_ms=[50, 150])     # each request: uniform 50-150 ms
    sb.configure(latency_ms=0)             # off (the default; a reset turns it off too)
    POST /_sandbox/config {"latency_ms": [50, 150]}
    GET  /_sandbox/latency                 # settings, requests delayed, peak overlap

Only requests from AWS clients are delayed: the control surface (``/_sandbox/...``) and the
sandbox's own internal clients (``X-Sandbox-Internal``) are not. The delay comes before moto
handles the request (and before the token bucket is consulted), so a throttled answer also costs
a round trip, as on AWS. ``peak_in_flight`` counts how many delayed requests overlapped at most:
the evidence that the server serves them side by side.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from typing import Any

MAX_MS = 60_000.0


def parse_ms(value: float | int | str | Sequence[float] | None) -> tuple[float, float]:
    """(low, high) milliseconds from a number (fixed), a ``[low, high]`` pair or ``"low-high"``."""
    if value is None:
        return 0.0, 0.0
    if isinstance(value, str):
        parts = value.replace(" ", "").split("-") if "-" in value.strip("-") else [value]
        pair = [float(p) for p in parts]
    elif isinstance(value, int | float):
        pair = [float(value)]
    else:
        pair = [float(v) for v in value]
    if len(pair) == 1:
        pair = pair * 2
    if len(pair) != 2:
        raise ValueError(f"latency_ms must be a number or a [low, high] pair, got {value!r}")
    low, high = pair
    if not 0 <= low <= high <= MAX_MS:
        raise ValueError(f"latency_ms must satisfy 0 <= low <= high <= {MAX_MS:.0f}, got {value!r}")
    return low, high


class Latency:
    """The per-request delay and its counters (thread-safe)."""

    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self.low_ms = 0.0
        self.high_ms = 0.0
        self.delayed = 0
        self.in_flight = 0
        self.peak_in_flight = 0

    def set(self, value: float | int | str | Sequence[float] | None) -> None:
        low, high = parse_ms(value)
        with self._lock:
            self.low_ms, self.high_ms = low, high
            self.delayed = 0
            self.peak_in_flight = 0

    def clear(self) -> None:
        self.set(0)

    @property
    def enabled(self) -> bool:
        return self.high_ms > 0

    def draw(self) -> float:
        """Seconds to hold the next request."""
        with self._lock:
            if self.high_ms <= 0:
                return 0.0
            ms = self.low_ms if self.low_ms == self.high_ms else self._random.uniform(self.low_ms, self.high_ms)
            return ms / 1000.0

    def wait(self) -> float:
        """Sleep one request's delay (the caller must not hold the moto lock), counting overlap."""
        seconds = self.draw()
        if seconds <= 0:
            return 0.0
        with self._lock:
            self.delayed += 1
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            time.sleep(seconds)
        finally:
            with self._lock:
                self.in_flight -= 1
        return seconds

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "latency_ms": [self.low_ms, self.high_ms],
                "delayed": self.delayed,
                "in_flight": self.in_flight,
                "peak_in_flight": self.peak_in_flight,
            }
