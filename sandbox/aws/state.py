"""Process-wide state shared by the moto extensions (moto's backends are process-wide too).

``LOCK`` serialises every request that reaches moto and every tick of the
instance-refresh state machine: moto's backends are not thread-safe and the
server is threaded.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from .faults import Faults
from .latency import Latency
from .token_bucket import TokenBuckets

LOCK = threading.RLock()


@dataclass
class Config:
    refresh_batch_seconds: float = 1.0  # warm-up time of one refresh batch (new instances -> InService)
    checkpoint_delay_scale: float = 1.0  # real seconds per CheckpointDelay second
    windows_password_seconds: float = 2.0  # GetPasswordData answers "" for this long after launch


@dataclass
class Runtime:
    faults: Faults = field(default_factory=Faults)
    config: Config = field(default_factory=Config)
    ssm_rules: list[dict[str, Any]] = field(default_factory=list)
    builders: Any = None  # sandbox.builders.Builders while an AwsSandbox with builders runs
    latency: Latency = field(default_factory=Latency)  # AWS's round trip (latency.py)
    token_buckets: TokenBuckets = field(default_factory=TokenBuckets)  # EC2's throttling (token_bucket.py)


RUNTIME = Runtime()
