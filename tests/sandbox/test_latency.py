"""AWS's round trip in the sandbox (sandbox/aws/latency.py): delayed outside moto's lock, so
concurrent requests wait side by side."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from sandbox.aws.latency import Latency, parse_ms
from tests.sandbox.conftest import no_retry_client


def _control(sandbox, method: str, path: str, payload: object | None = None) -> tuple[int, dict]:
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(f"{sandbox.endpoint_url}/_sandbox/{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_parse_ms_accepts_a_number_a_pair_or_a_range_and_refuses_nonsense():
    assert parse_ms(50) == (50.0, 50.0)
    assert parse_ms([50, 150]) == (50.0, 150.0)
    assert parse_ms("50-150") == (50.0, 150.0)
    assert parse_ms(None) == (0.0, 0.0)
    for bad in (-1, [150, 50], [1, 2, 3], 10**6):
        with pytest.raises(ValueError, match="latency_ms"):
            parse_ms(bad)


def test_a_range_draws_each_delay_within_it():
    lat = Latency(seed=1)
    lat.set([50, 150])
    draws = [lat.draw() for _ in range(200)]
    assert all(0.05 <= d <= 0.15 for d in draws)
    assert max(draws) - min(draws) > 0.05  # a range, not one fixed value


def test_concurrent_requests_are_delayed_side_by_side_not_one_after_another(sandbox):
    sandbox.configure(latency_ms=200)
    n = 8
    clients = [no_retry_client(sandbox, "ec2") for _ in range(n)]
    clients[0].describe_vpcs()  # connections and credentials warm, outside the timing
    start = threading.Barrier(n)
    errors: list[BaseException] = []

    def one(client) -> None:
        try:
            start.wait(timeout=10)
            client.describe_vpcs()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(c,)) for c in clients]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    wall = time.perf_counter() - t0
    assert not errors
    state = sandbox.latency.as_dict()
    # served side by side: most of the 8 delays overlapped (a delay inside moto's lock gives 1) ...
    assert state["peak_in_flight"] >= n // 2, state
    # ... and 8 requests took far less than 8 round trips (wide margin for a loaded machine)
    assert wall < n * 0.2 * 0.6, wall


def test_sequential_requests_each_pay_the_round_trip(sandbox):
    ec2 = no_retry_client(sandbox, "ec2")
    ec2.describe_vpcs()
    t0 = time.perf_counter()
    for _ in range(3):
        ec2.describe_vpcs()
    quick = time.perf_counter() - t0
    sandbox.configure(latency_ms=150)
    t0 = time.perf_counter()
    for _ in range(3):
        ec2.describe_vpcs()
    slow = time.perf_counter() - t0
    assert slow >= 3 * 0.15
    assert slow > quick
    assert sandbox.latency.as_dict()["delayed"] == 3


def test_internal_and_control_requests_are_not_delayed_and_a_reset_turns_it_off(sandbox):
    status, config = _control(sandbox, "POST", "config", {"latency_ms": [100, 100]})
    assert status == 200 and config["latency_ms"] == [100.0, 100.0]
    sandbox.client("ec2", internal=True).describe_vpcs()
    _control(sandbox, "GET", "state")
    status, state = _control(sandbox, "GET", "latency")
    assert status == 200 and state["delayed"] == 0
    no_retry_client(sandbox, "ec2").describe_vpcs()
    assert _control(sandbox, "GET", "latency")[1]["delayed"] == 1
    sandbox.reset()
    assert sandbox.latency.as_dict()["latency_ms"] == [0.0, 0.0]


def test_bad_latency_through_the_control_surface_is_refused_in_words(sandbox):
    status, body = _control(sandbox, "POST", "config", {"latency_ms": [150, 50]})
    assert status == 400 and "latency_ms" in body["error"]
    assert sandbox.latency.as_dict()["latency_ms"] == [0.0, 0.0]
