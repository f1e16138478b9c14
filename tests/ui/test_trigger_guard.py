"""Triggering our DAGs through a real Airflow API server with this repo's plugin: bad params
are answered in words (not a regex) and nothing is created; runs are named after what they do;
the trigger form in Chromium shows the words. Screenshots: .artifacts/ui/test_trigger_guard/."""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from amirelease.ui.trigger_guard import duplicate_words, problems, run_name
from tests.release.conftest import load_dag
from tests.ui.conftest import end_leftover_runs, login
from tests.ui.server import ApiServer

pytestmark = pytest.mark.e2e

BAD_RELEASES = [  # (conf, words the answer must contain)
    ({"app": "demo-web", "version": "1.2"}, "Version: '1.2' is not in the expected form. MAJOR.MINOR.PATCH"),
    ({"app": "demo-web", "version": ""}, "Version is empty"),
    ({"app": "demo-web", "version": "2.0.0\n"}, "Version: '2.0.0\\n' is not in the expected form"),
    ({"app": "no-such-app", "version": "2.0.0"}, "Application: 'no-such-app' is not one of the choices (demo-web"),
    ({"app": "demo-web", "version": "2.0.0", "git_ref": "main branch"}, "Git ref: 'main branch'"),
    ({"app": "demo-web", "version": "2.0.0", "notes": "x" * 501}, "Release notes: 501 characters is too long"),
    ({"app": "demo-web", "verison": "2.0.0"}, "verison: not a setting of this DAG"),
]


# -- the words, from the DAG's own params (no server) ----------------------------------------------
def params_of(dag: Any) -> dict[str, tuple[Any, str, Any]]:
    return {k: (p.schema, p.description or "", p.value) for k, p in dag.params.items()}


@pytest.mark.parametrize("conf,words", BAD_RELEASES, ids=[str(i) for i in range(len(BAD_RELEASES))])
def test_bad_release_params_in_words(conf: dict[str, Any], words: str) -> None:
    found = problems(params_of(load_dag()), conf)
    assert found and words in " ".join(found), found
    assert not any("^" in f or "(?!" in f for f in found), f"a regex reached the person: {found}"


def test_good_params_pass_and_every_problem_is_named() -> None:
    params = params_of(load_dag())
    assert problems(params, {"app": "demo-web", "version": "1.2.0", "git_ref": "v1.2.0"}) == []
    both = problems(params, {"app": "nope", "version": "x"})
    assert len(both) == 2 and both[0].startswith("Application") and both[1].startswith("Version"), both


def test_run_names_say_what_the_run_is() -> None:
    at = datetime(2026, 11, 26, 13, 1, 56, tzinfo=UTC)
    release = {"app": "demo-web", "version": "1.2.0"}
    assert run_name("ami_release", release, at, suffix="3f9c2a") == "demo-web_1.2.0__2026-11-26T13:01:56Z-3f9c2a"
    assert run_name("ami_rollback", {"app": "demo-web", "target": "1.1.0"}, at, suffix="x") == (
        "rollback_demo-web_to_1.1.0__2026-11-26T13:01:56Z-x"
    )
    assert run_name("ami_rollback", {"app": "demo-web", "target": None}, at, suffix="x") == (
        "rollback_demo-web__2026-11-26T13:01:56Z-x"
    )
    assert run_name("ami_retention_manual", {"mode": "dry_run"}, at, suffix="x") == "dry_run__2026-11-26T13:01:56Z-x"
    assert run_name("ami_release", {"app": "demo-web", "version": "1.2.0 x/y"}, at).startswith("demo-web_1.2.0-x-y__")
    assert run_name("ami_retention", {}, at) is None


def test_two_triggers_in_the_same_second_get_two_run_ids() -> None:
    """A double click or a re-sent webhook: the same conf in the same second is two ids (it was one)."""
    at = datetime(2026, 11, 26, 13, 1, 56, 999, tzinfo=UTC)
    for dag_id, conf in (
        ("ami_release", {"app": "demo-web", "version": "1.2.0"}),
        ("ami_rollback", {"app": "demo-web"}),
        ("ami_retention_manual", {"mode": "apply"}),
    ):
        names = {run_name(dag_id, conf, at) for _ in range(50)}
        assert len(names) == 50, names
        assert all(re.fullmatch(r"[A-Za-z0-9_.~:+-]+__2026-11-26T13:01:56Z-[0-9a-f]{6}", n or "") for n in names)


def test_a_trigger_that_repeats_an_active_run_is_named_in_words() -> None:
    since = datetime(2026, 12, 4, 2, 46, 58, tzinfo=UTC)
    active = [
        ("demo-web_1.1.5__2026-12-04T02:46:58Z-aa", "running", since, {"app": "demo-web", "version": "1.1.5"}),
        ("other_1.2.0__x", "queued", None, {"app": "other", "version": "1.2.0"}),
    ]
    words = duplicate_words("ami_release", {"app": "demo-web", "version": "1.1.5"}, active)
    assert words == (
        "demo-web 1.1.5 is already being released by run demo-web_1.1.5__2026-12-04T02:46:58Z-aa (running since "
        "2026-12-04 02:46:58 UTC). Follow that run: when it succeeds the version is released; if it fails, trigger "
        "again."
    )
    assert duplicate_words("ami_release", {"app": "demo-web", "version": "1.2.0"}, active) is None  # another app's
    assert duplicate_words("ami_release", {"app": "demo-web", "version": "1.1.6"}, active) is None
    rollbacks = [("rollback_demo-web__x", "queued", since, {"app": "demo-web", "reason": "r" * 10})]
    words = duplicate_words("ami_rollback", {"app": "demo-web", "target": "1.0.0"}, rollbacks)
    assert words is not None and "a rollback of demo-web is already queued: run rollback_demo-web__x" in words
    assert duplicate_words("ami_rollback", {"app": "other"}, rollbacks) is None


# -- through the API server ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(api_server: ApiServer) -> ApiServer:
    """The API server, with this repo's DAGs serialized in its metadata DB (as a DAG processor would)."""
    api_server.serialize_dags()
    api_server.wait_ready()
    return api_server


def call(server: ApiServer, method: str, path: str, body: Any = None, user: str = "admin") -> tuple[int, Any]:
    req = urllib.request.Request(
        server.base + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {server.token(user)}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def runs(server: ApiServer, dag_id: str) -> list[str]:
    status, body = call(server, "GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")
    assert status == 200, body
    return [r["dag_run_id"] for r in body["dag_runs"]]


def test_a_bad_trigger_is_answered_in_words_and_creates_nothing(server: ApiServer) -> None:
    before = runs(server, "ami_release")
    for conf, words in BAD_RELEASES:
        status, body = call(server, "POST", "/api/v2/dags/ami_release/dagRuns", {"logical_date": None, "conf": conf})
        assert status == 400, (conf, status, body)
        assert body["detail"].startswith("Not started: ") and words in body["detail"], body
    status, body = call(
        server,
        "POST",
        "/api/v2/dags/ami_rollback/dagRuns",
        {"logical_date": None, "conf": {"app": "demo-web", "reason": "bad"}},
    )
    assert status == 400 and "Reason (required) is too short" not in body["detail"], body
    assert "Reason is too short (3 characters; at least 10)" in body["detail"], body
    assert runs(server, "ami_release") == before


def test_a_good_trigger_is_named_after_its_conf(server: ApiServer) -> None:
    # 7.3.x: a version no test writes to this worker's ledger (the Releases page's story has 1.0.0-1.3.1,
    # and a released version is refused with 409 now)
    status, body = call(
        server,
        "POST",
        "/api/v2/dags/ami_release/dagRuns",
        {"logical_date": None, "conf": {"app": "demo-web", "version": "7.3.0"}},
    )
    assert status == 200, body
    assert body["dag_run_id"].startswith("demo-web_7.3.0__"), body["dag_run_id"]
    assert body["conf"] == {"app": "demo-web", "version": "7.3.0"} and body["triggering_user_name"] == "admin"
    status, body = call(
        server,
        "POST",
        "/api/v2/dags/ami_rollback/dagRuns",
        {"logical_date": None, "conf": {"app": "demo-web", "reason": "INC-1: 5xx since 1.2.0", "target": "1.1.0"}},
    )
    assert status == 200 and body["dag_run_id"].startswith("rollback_demo-web_to_1.1.0__"), body
    # a caller's own run id is kept; Airflow's own checks still apply after ours
    own = f"my-own-id-{uuid.uuid4().hex[:8]}"
    status, body = call(
        server,
        "POST",
        "/api/v2/dags/ami_release/dagRuns",
        {"logical_date": None, "dag_run_id": own, "conf": {"app": "demo-web", "version": "7.3.1"}},
    )
    assert status == 200 and body["dag_run_id"] == own, body
    status, body = call(
        server,
        "POST",
        "/api/v2/dags/ami_release/dagRuns",
        {"logical_date": None, "dag_run_id": own, "conf": {"app": "demo-web", "version": "7.3.1"}},
    )
    assert status == 409 and f"demo-web 7.3.1 is already being released by run {own}" in body["detail"], body


def test_the_same_trigger_twice_at_once_is_one_run_or_two_never_a_database_error(server: ApiServer) -> None:
    """Double clicks (issue 26): the same release or rollback twice -> one run, the second answered 409
    in words naming it; the same manual retention twice -> two runs (Airflow queues the second)."""
    conf = {"app": "demo-win", "version": "4.0.0"}
    first = call(server, "POST", "/api/v2/dags/ami_release/dagRuns", {"logical_date": None, "conf": conf})
    second = call(server, "POST", "/api/v2/dags/ami_release/dagRuns", {"logical_date": None, "conf": conf})
    assert first[0] == 200, first
    assert second[0] == 409, second
    assert second[1]["detail"].startswith(
        f"Not started: demo-win 4.0.0 is already being released by run {first[1]['dag_run_id']} (queued since 20"
    ) and second[1]["detail"].endswith(
        " UTC). Follow that run: when it succeeds the version is released; if it fails, trigger again."
    ), second
    rollback = {"app": "demo-win", "reason": "INC-2: the same rollback twice"}
    first = call(server, "POST", "/api/v2/dags/ami_rollback/dagRuns", {"logical_date": None, "conf": rollback})
    second = call(server, "POST", "/api/v2/dags/ami_rollback/dagRuns", {"logical_date": None, "conf": rollback})
    assert first[0] == 200 and second[0] == 409, (first, second)
    assert f"a rollback of demo-win is already queued: run {first[1]['dag_run_id']}" in second[1]["detail"]
    started = [
        call(server, "POST", "/api/v2/dags/ami_retention_manual/dagRuns", {"logical_date": None, "conf": {}})
        for _ in range(2)
    ]
    assert [s for s, _ in started] == [200, 200], started
    a, b = (body["dag_run_id"] for _, body in started)
    assert a != b and a.split("__")[0] == b.split("__")[0] == "policy", (a, b)
    assert "Unique constraint" not in json.dumps(started)


def _at_once(server: ApiServer, dag_id: str, conf: dict[str, Any], n: int) -> list[tuple[int, Any]]:
    """The same trigger n times at the same instant (a double submit, webhooks re-sent together)."""
    start = threading.Barrier(n)

    def send() -> tuple[int, Any]:
        start.wait()
        return call(server, "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})

    with ThreadPoolExecutor(n) as pool:
        return [f.result() for f in [pool.submit(send) for _ in range(n)]]


def test_the_same_trigger_at_the_same_instant_is_one_run(server: ApiServer) -> None:
    """Sent together, not one after the other: the repeat check and the run's creation are one
    step per app, so exactly one run is made and every other trigger is answered 409 naming it."""
    version = f"4.2.{uuid.uuid4().int % 10**6}"  # the API server's DB outlives one pytest run
    answers = _at_once(server, "ami_release", {"app": "demo-win", "version": version}, 4)
    made = [body["dag_run_id"] for status, body in answers if status == 200]
    assert len(made) == 1, answers
    refused = [body["detail"] for status, body in answers if status == 409]
    assert len(refused) == 3 and all(f"{version} is already being released by run {made[0]}" in d for d in refused)
    status, body = call(server, "GET", "/api/v2/dags/ami_release/dagRuns?limit=100&order_by=-run_after")
    assert status == 200, body
    assert [r["dag_run_id"] for r in body["dag_runs"] if (r["conf"] or {}).get("version") == version] == made
    end_leftover_runs()  # the rollbacks earlier tests queued (no scheduler here): as if they had ended
    answers = _at_once(server, "ami_rollback", {"app": "demo-web", "reason": "INC-3: two on-call at once"}, 3)
    assert sorted(status for status, _ in answers) == [200, 409, 409], answers


def test_no_credentials_no_words(server: ApiServer) -> None:
    """Anonymous callers get Airflow's 401, not the catalog's app names."""
    req = urllib.request.Request(
        server.base + "/api/v2/dags/ami_release/dagRuns",
        data=json.dumps({"logical_date": None, "conf": {"app": "x", "version": "1"}}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 401 and b"demo-web" not in err.value.read()


# -- the trigger form, in Chromium -----------------------------------------------------------------
@pytest.fixture(scope="module")
def admin_page(browser: Any, server: ApiServer) -> Iterator[Any]:
    context = login(browser, server, "admin", land="/dags/ami_release")
    yield context.pages[0]
    context.close()


def test_the_trigger_form_shows_the_words(admin_page: Any, server: ApiServer, artifacts: Path) -> None:
    page = admin_page
    page.goto(f"{server.base}/dags/ami_release")
    page.get_by_role("button", name="Trigger").first.click()
    version = page.get_by_role("dialog").locator("input[name='element_version'], #element_version").first
    version.wait_for()
    version.fill("1.2")
    page.get_by_role("dialog").get_by_role("button", name="Trigger").click()
    message = page.get_by_text("is not in the expected form", exact=False)
    message.wait_for(timeout=30_000)
    page.screenshot(path=str(artifacts / "trigger-form-bad-version.png"))
    text = page.get_by_role("dialog").inner_text()
    assert "Version: '1.2' is not in the expected form. MAJOR.MINOR.PATCH" in text, text
    assert "(?!" not in text and "does not match" not in text, text
    version.fill("1.3.0")
    # Airflow's "Failed to Trigger Dag" toast lies over the dialog's button until it goes away
    # (it stays while the pointer rests on it)
    page.mouse.move(10, 10)
    page.locator("[data-scope='toast'][data-part='root']").first.wait_for(state="detached", timeout=60_000)
    page.get_by_role("dialog").get_by_role("button", name="Trigger").click()
    page.get_by_role("dialog").wait_for(state="detached", timeout=30_000)
    page.goto(f"{server.base}/dags/ami_release/runs")
    page.get_by_text("demo-web_1.3.0__", exact=False).first.wait_for(timeout=30_000)
    page.screenshot(path=str(artifacts / "runs-list-named.png"))


def test_a_released_version_is_answered_409_at_the_trigger_from_the_ledger(server: ApiServer, aws_sandbox) -> None:
    """The ledger (S3, through aws_default) holds a succeeded 4.1.0 of demo-win (written here as the
    record task writes it; tests/release/test_one_release_e2e.py makes one through a real release):
    ami_release 4.1.0 is answered 409 in words naming it, before a run exists; 4.1.0-rc.1 (a
    release id sharing the prefix) and a rebuild on purpose are started."""
    from amirelease.ledger import Ledger
    from tests.ui.server import LEDGER_BUCKET

    ledger = Ledger(aws_sandbox.client("s3"), LEDGER_BUCKET)
    ledger.put(
        {
            "app": "demo-win",
            "version": "4.1.0",
            "release_id": "demo-win-4.1.0-0a1b2c3d4e5f",
            "kind": "release",
            "outcome": "succeeded",
            "amis": {"us-east-1": "ami-0feedbeef0000041"},
            "dag_id": "ami_release",
            "pipeline_run": "demo-win_4.1.0__2026-12-04T02:46:58Z-aa11bb",
            "started_at": "2026-12-04T02:46:58Z",
            "finished_at": "2026-12-04T02:58:01Z",
        }
    )
    ledger.put({**ledger.get("demo-win", "demo-win-4.1.0-0a1b2c3d4e5f"), "release_id": "demo-win-4.1.0-rc.1-f0"})
    ledger.update("demo-win", "demo-win-4.1.0-rc.1-f0", version="4.1.0-rc.1", outcome="failed")
    before = runs(server, "ami_release")
    status, body = call(
        server,
        "POST",
        "/api/v2/dags/ami_release/dagRuns",
        {"logical_date": None, "conf": {"app": "demo-win", "version": "4.1.0"}},
    )
    assert status == 409, body
    assert body["detail"].startswith(
        "Not started: demo-win 4.1.0 was already released: release demo-win-4.1.0-0a1b2c3d4e5f (finished "
        "2026-12-04T02:58:01Z, AMI ami-0feedbeef0000041, run ami_release/demo-win_4.1.0__2026-12-04T02:46:58Z-aa11bb). "
        "To go on: to bring that release back, trigger ami_rollback with target 4.1.0;"
    ), body
    assert runs(server, "ami_release") == before
    status, body = call(
        server,
        "POST",
        "/api/v2/dags/ami_release/dagRuns",
        {"logical_date": None, "conf": {"app": "demo-win", "version": "4.1.0-rc.1"}},
    )
    assert status == 200, body  # its only release failed: it may be tried again
    rebuild = {"app": "demo-win", "version": "4.1.0", "rebuild": True, "rebuild_reason": "CVE-2026-1234 base image"}
    status, body = call(server, "POST", "/api/v2/dags/ami_release/dagRuns", {"logical_date": None, "conf": rebuild})
    assert status == 200 and body["conf"]["rebuild"] is True, body
