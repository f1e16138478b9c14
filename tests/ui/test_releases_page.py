"""The Releases page, as a person sees it: a real Airflow API server with this repo's plugin,
Debian's Chromium (headless, Playwright), the sandbox account with demo-web's history
(tests/ui/story.py). Screenshots: .artifacts/ui/test_releases_page/.

The tests run in file order against one server and one history; the last ones change it
(a hold lifted from the page, one from `make release-hold`, a refresh started).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from amirelease.ledger import Ledger, pick_rollback_target
from tests.conftest import REPO
from tests.ui.conftest import login
from tests.ui.server import LEDGER_BUCKET, ApiServer
from tests.ui.story import APP, GROUP, REGION, Story

pytestmark = pytest.mark.e2e

GREEN = "rgb(218, 251, 225)"  # .status.ok / .kept
RED = "rgb(255, 235, 233)"  # .status.failed
PURPLE = "rgb(251, 239, 255)"  # .status.rolledback
AMBER = "rgb(255, 248, 197)"  # .status.held
ORANGE = "rgb(255, 241, 229)"  # .status.marked
BLUE = "rgb(221, 244, 255)"  # .status.progress


@pytest.fixture(scope="module")
def admin(browser: Any, api_server: ApiServer, story: Story) -> Iterator[Any]:
    context = login(browser, api_server, "admin")
    yield context
    context.close()


@pytest.fixture(scope="module")
def viewer(browser: Any, api_server: ApiServer, story: Story) -> Iterator[Any]:
    context = login(browser, api_server, "viewer")
    yield context
    context.close()


def open_app(context: Any, server: ApiServer, app: str = APP) -> Any:
    page = context.new_page()
    page.goto(f"{server.base}/releases/apps/{app}")
    page.get_by_role("heading", name="Live now").wait_for()
    return page


def background(locator: Any) -> str:
    return str(locator.evaluate("e => getComputedStyle(e).backgroundColor"))


def row_text(page: Any, section: str, attr: str, value: str) -> str:
    return str(page.locator(f"#{section} tr[data-{attr}='{value}']").inner_text())


def ami_tags(story: Story, ami: str) -> dict[str, str]:
    image = story.writer.ec2.describe_images(ImageIds=[ami])["Images"][0]
    return {t["Key"]: t["Value"] for t in image.get("Tags", [])}


def record(story: Story, release_id: str) -> dict[str, Any]:
    rec = Ledger(story.writer.s3, LEDGER_BUCKET).get(APP, release_id)
    assert rec is not None
    return rec


def http(
    server: ApiServer, method: str, path: str, *, headers: dict[str, str] | None = None, data: bytes | None = None
):
    """(status, location, body) without following redirects."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    req = urllib.request.Request(server.base + path, method=method, data=data, headers=headers or {})
    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=30) as r:
            return r.status, r.headers.get("Location"), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Location"), exc.read().decode()


# -- who may see what -------------------------------------------------------------------------
def test_without_a_session_a_person_is_sent_to_login_and_sees_no_release_data(
    browser: Any, api_server: ApiServer, story: Story, artifacts: Path
) -> None:
    rid = story["rb2"].release_id
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{api_server.base}/releases/apps/{APP}")
    page.wait_for_url(re.compile(r"/auth/login\?next="))
    assert "next=%2Freleases%2Fapps%2Fdemo-web" in page.url
    page.get_by_text("Sign into Airflow").wait_for()
    assert rid not in page.content()
    page.screenshot(path=str(artifacts / "01-anonymous-login.png"))

    # A session cookie that is not a valid Airflow token: the login page as well.
    context.add_cookies([{"name": "_token", "value": "not-a-token", "url": api_server.base}])
    page.goto(f"{api_server.base}/releases/apps/{APP}")
    page.wait_for_url(re.compile(r"/auth/login"))
    context.close()

    # Not a browser: 401, no data; and no hold can be lifted without a session.
    status, _, body = http(api_server, "GET", f"/releases/apps/{APP}")
    assert status == 401 and rid not in body and "not logged in" in body
    held = story["1.3.1"]
    status, _, body = http(
        api_server,
        "POST",
        f"/releases/apps/{APP}/holds/{held.release_id}/lift",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        data=b"reason=anonymous+lifting+attempt",
    )
    assert status == 401
    assert "ForensicHold" in ami_tags(story, held.ami)


def test_the_navigation_entry_opens_the_page_inside_airflow(admin: Any, api_server: ApiServer, artifacts: Path) -> None:
    page = admin.new_page()
    page.goto(f"{api_server.base}/")
    page.get_by_role("link", name="Releases").click()
    # Airflow 3.3 opens /plugin/releases, then mirrors the frame's own address (/releases/) after
    # it: /plugin/releases/releases/. Which of the two the test sees first depends on how fast the
    # frame loads (CI once saw only the second), so both are right here.
    page.wait_for_url(re.compile(r"/plugin/releases(/releases/)?$"))
    frame = page.frame_locator("iframe")
    frame.get_by_role("link", name=APP, exact=True).click()
    frame.get_by_role("heading", name="Live now").wait_for()
    frame.get_by_role("heading", name="Timeline").wait_for()
    # The address bar follows the frame: a link a person copies opens this app's page in Airflow.
    page.wait_for_url(re.compile(rf"/plugin/releases/releases/apps/{APP}$"))
    shared = page.url
    page.screenshot(path=str(artifacts / "02-inside-airflow.png"))
    page.close()
    page = admin.new_page()
    page.goto(shared)
    page.frame_locator("iframe").get_by_role("heading", name=APP, exact=True, level=1).wait_for()
    page.frame_locator("iframe").get_by_role("heading", name="Live now").wait_for()
    page.close()


# -- what the page says --------------------------------------------------------------------------
def test_live_now_shows_the_release_each_group_runs(
    admin: Any, api_server: ApiServer, story: Story, artifacts: Path
) -> None:
    rb2 = story["rb2"]
    page = open_app(admin, api_server)
    page.screenshot(path=str(artifacts / "03-app-page.png"), full_page=True)
    row = page.locator(f"#live tr[data-ami='{rb2.ami}']")
    text = row.inner_text()
    lt = rb2.record["launch_template_versions"][0]
    for expected in (
        "3",  # instances
        rb2.release_id,
        "re-release of 1.2.0",
        "1.2.0",
        rb2.ami,
        f"{lt['launch_template_id']} v{lt['launch_template_version']}",
        "erin",
        f"{rb2.record['finished_at'][:16].replace('T', ' ')} UTC (4",  # started 1 h ago, took 17 min: 43-44 min ago
    ):
        assert expected in text, (expected, text)
    assert background(row.locator(".status")) == GREEN and row.locator(".status").inner_text() == "released"
    link = row.get_by_role("link", name="open the run")
    assert link.get_attribute("href") == f"/dags/ami_rollback/runs/{quote(rb2.run_id, safe='')}"
    assert link.get_attribute("target") == "_top"  # leaves the iframe for Airflow's run page
    assert "3 of 3 instances in service" in page.locator("#live").inner_text()

    other = open_app(admin, api_server, "demo-win")
    assert "Auto Scaling group demo-win-asg does not exist in us-east-1" in other.locator("#live").inner_text()
    assert "No release of demo-win in the ledger yet." in other.locator("#timeline").inner_text()

    # where each release came from (a git-sourced one: ref, commit, repository) and who reaches what
    from tests.ui.story import GIT_SOURCE

    row = page.locator(f"#timeline tr[data-release='{story['1.3.1'].release_id}']").inner_text()
    assert f"v1.3.1 = {GIT_SOURCE['commit'][:12]} of {GIT_SOURCE['repository']}" in row
    assert "of https://" not in page.locator(f"#timeline tr[data-release='{story['1.2.0'].release_id}']").inner_text()
    access = page.locator("#access").inner_text()
    assert "Vault secret/ami-pipeline/demo-web/* only" in access and "ami-app-demo-web" in access
    assert "the central catalog (demo-web.yaml and include/)" in access
    assert "its own role arn:aws:iam::123456789012:role/ami-app-demo-web" in access and "App=demo-web" in access


def test_timeline_tells_each_release_its_outcome_rollback_and_failure(
    admin: Any, api_server: ApiServer, story: Story
) -> None:
    page = open_app(admin, api_server)
    ids = page.locator("#timeline tbody tr").evaluate_all("rows => rows.map(r => r.dataset.release)")
    assert ids == [story[k].release_id for k in ("rb2", "1.3.1", "1.3.0", "1.2.0", "rb1", "1.1.0", "1.0.0")]

    rolled = page.locator(f"#timeline tr[data-release='{story['1.3.1'].release_id}']")
    text = rolled.inner_text()
    assert "rolled back" in text and background(rolled.locator(".status.rolledback")) == PURPLE
    assert f"rolled back by re-release of 1.2.0 ({story['rb2'].release_id})" in text
    assert "reason: INC-4711 5xx after 1.3.1" in text and "\t20 min\n" in text and "dave" in text
    # how long each step took (the record's phases), under the duration
    assert rolled.locator(".phases").inner_text() == "bake 5 min · smoke test 2 min · refresh 10 min"
    assert rolled.get_by_role("link", name="the rollback run").get_attribute("href") == (
        f"/dags/ami_rollback/runs/{quote(story['rb2'].run_id, safe='')}"
    )

    failed = page.locator(f"#timeline tr[data-release='{story['1.3.0'].release_id}']")
    text = failed.inner_text()
    assert background(failed.locator(".status")) == RED and "failed" in text
    assert "at smoke_test: smoke test of the new AMI failed: health endpoint answers" in text
    assert "\t9 min\n" in text and failed.locator(".phases").inner_text() == "bake 5 min · smoke test 2 min"

    rb1 = row_text(page, "timeline", "release", story["rb1"].release_id)
    assert "re-release of 1.0.0" in rb1 and "succeeded" in rb1 and "rollback: INC-1001" in rb1
    first = page.locator(f"#timeline tr[data-release='{story['1.0.0'].release_id}']")
    assert background(first.locator(".status")) == GREEN and "release 1.0.0" in first.inner_text()
    assert first.get_by_role("link", name="open the run").get_attribute("href") == (
        f"/dags/ami_release/runs/{quote(story['1.0.0'].run_id, safe='')}"
    )


def test_holds_and_retention_per_ami(admin: Any, api_server: ApiServer, story: Story) -> None:
    page = open_app(admin, api_server)
    seeded = story.seeded
    due = story.marks[story["1.0.0"].ami].rsplit("@", 1)[1].replace("/", "-")

    held = page.locator(f"#holds tr[data-ami='{story['1.3.1'].ami}']")
    text = held.inner_text()
    assert background(held.locator(".hold .status")) == AMBER
    assert "held since" in text and "by erin's rollback: INC-4711 5xx after 1.3.1" in text
    assert held.get_by_role("button", name="Lift hold").is_visible()
    assert "from retention report of" in text and "kept: held: ForensicHold" in text

    old_held = row_text(page, "holds", "ami", story["1.1.0"].ami)
    assert "held since" in old_held and "(79 days ago) by carol's rollback: INC-1001 memory leak" in old_held

    marked = page.locator(f"#holds tr[data-ami='{story['1.0.0'].ami}']")
    assert f"marked: deregister on {due} (unused for 100 days)" in marked.inner_text()
    assert background(marked.locator(".retention .status")) == ORANGE

    near_miss_key = row_text(page, "holds", "ami", seeded["demo-web-0.9.1"])
    assert "retainindefinitely=true was ignored" in near_miss_key and "from retention report of" in near_miss_key
    near_miss_value = row_text(page, "holds", "ami", seeded["demo-web-0.9.2"])
    assert "'RetainIndefinitely'='True' was ignored and does not protect this image" in near_miss_value
    assert f"marked: deregister on {due}" in near_miss_value and "from AMI tags" in near_miss_value
    forever = page.locator(f"#holds tr[data-ami='{seeded['demo-web-0.9.0']}']")
    assert "yes: kept forever" in forever.inner_text()
    assert background(forever.locator(".retention .status")) == GREEN

    young = page.locator(f"#holds tr[data-ami='{seeded['demo-web-0.9.6']}']")
    assert f"eligible on {(story.now + timedelta(days=1)):%Y-%m-%d} if unused then" in young.inner_text()
    assert young.locator(".retention .status").inner_text() == "too young"
    in_use = row_text(page, "holds", "ami", story["rb2"].ami)
    assert "3 instances" in in_use and "kept: in use by 3 instances" in in_use
    assert seeded["demo-web-0.9.4"] not in page.locator("#holds").inner_text()  # deregistered by the retention run


def test_rollback_preview_says_what_an_empty_target_picks(admin: Any, api_server: ApiServer, story: Story) -> None:
    history = Ledger(story.writer.s3, LEDGER_BUCKET).history(APP)
    expected = pick_rollback_target(history, story["rb2"].release_id)
    page = open_app(admin, api_server)
    text = page.locator("#rollback").inner_text()
    assert f"Running now: 1.2.0 ({story['rb2'].release_id}, re-release of 1.2.0)" in text
    assert f"An empty target re-releases {APP} {expected['version']}" in text and expected["release_id"] in text
    if expected.get("rolled_back"):  # the rollback DAG on this branch still picks a rolled-back release (issue 9)
        assert f"{expected['version']} was itself rolled back by" in text
    assert f"kept under a forensic hold: {story['rb2'].ami} ({REGION})" in text
    button = page.get_by_role("link", name="Open ami_rollback in Airflow")
    assert button.get_attribute("href") == "/dags/ami_rollback" and button.get_attribute("target") == "_top"


def test_rolling_back_from_the_preview_starts_ami_rollback_with_the_target_shown(
    admin: Any, viewer: Any, api_server: ApiServer, story: Story, artifacts: Path
) -> None:
    """Airflow 3.3 cannot pre-fill its trigger form from a link: the preview carries its own form."""
    api_server.serialize_dags()
    history = Ledger(story.writer.s3, LEDGER_BUCKET).history(APP)
    expected = pick_rollback_target(history, story["rb2"].release_id)
    refused = viewer.request.post(
        f"{api_server.base}/releases/apps/{APP}/rollback",
        form={"reason": "viewer tries a rollback", "target": expected["release_id"]},
    )
    assert refused.status == 403 and "You may not roll back" in refused.text()
    bad = admin.request.post(
        f"{api_server.base}/releases/apps/{APP}/rollback", form={"reason": "short", "target": expected["release_id"]}
    )
    assert bad.status == 400 and "Rollback not started: Reason is too short (5 characters; at least 10)" in bad.text()

    page = open_app(admin, api_server)
    form = page.locator("#rollback form.rollback")
    reason = form.get_by_role("textbox", name="Reason for the rollback")
    reason.fill("INC-77: 5xx since 1.2.0 (from the page)")
    if expected.get("rolled_back"):
        form.get_by_role("checkbox", name=re.compile("though it was rolled back")).check()
    page.screenshot(path=str(artifacts / "03-rollback-form.png"), full_page=True)
    form.get_by_role("button", name=f"Roll back {APP} to {expected['version']}").click()
    page.wait_for_url(re.compile(r"/dags/ami_rollback/runs/rollback_demo-web_to_"))
    run_id = page.url.rsplit("/runs/", 1)[1]
    status, _, body = http(
        api_server,
        "GET",
        f"/api/v2/dags/ami_rollback/dagRuns/{run_id}",
        headers={"Authorization": f"Bearer {api_server.token('admin')}"},
    )
    run = json.loads(body)
    assert status == 200 and run["triggering_user_name"] == "admin", body
    assert run["conf"]["target"] == expected["release_id"] and run["conf"]["forensic_hold"] is True, run["conf"]
    assert run["conf"]["reason"] == "INC-77: 5xx since 1.2.0 (from the page)"


# -- lifting a hold --------------------------------------------------------------------------------
def test_a_viewer_sees_holds_but_may_not_lift_one(viewer: Any, api_server: ApiServer, story: Story) -> None:
    held = story["1.3.1"]
    page = open_app(viewer, api_server)
    row = page.locator(f"#holds tr[data-ami='{held.ami}']")
    assert "held since" in row.inner_text()
    assert row.get_by_role("button", name="Lift hold").count() == 0
    assert "Lifting a hold needs the permission to trigger ami_rollback" in row.inner_text()

    # Posting the form anyway (the viewer's own session): 403, nothing changed.
    response = viewer.request.post(
        f"{api_server.base}/releases/apps/{APP}/holds/{held.release_id}/lift",
        form={"reason": "viewer tries to lift the hold"},
    )
    assert response.status == 403 and "You may not lift a forensic hold" in response.text()
    assert "ForensicHold" in ami_tags(story, held.ami)
    assert not record(story, held.release_id)["forensic_hold"].get("released_at")


def test_lifting_a_hold_from_the_page_records_it_and_shows_it(
    admin: Any, api_server: ApiServer, story: Story, artifacts: Path
) -> None:
    held = story["1.3.1"]
    page = open_app(admin, api_server)
    row = page.locator(f"#holds tr[data-ami='{held.ami}']")
    reason = row.get_by_role("textbox")
    reason.fill("ok")  # too short: the browser refuses to send it
    row.get_by_role("button", name="Lift hold").click()
    assert reason.evaluate("e => e.validity.tooShort || e.validity.valueMissing") is True
    assert "ForensicHold" in ami_tags(story, held.ami)

    too_short = admin.request.post(
        f"{api_server.base}/releases/apps/{APP}/holds/{held.release_id}/lift", form={"reason": "ok"}
    )
    assert too_short.status == 400 and "a reason of at least 10 characters is needed" in too_short.text()

    reason.fill("INC-4711 closed: forensics done, the AMI may go")
    row.get_by_role("button", name="Lift hold").click()
    banner = page.get_by_role("status")
    banner.wait_for()
    assert banner.inner_text().startswith(f"1.3.1 ({held.release_id}): hold lifted ")
    assert "by admin: INC-4711 closed: forensics done, the AMI may go. Recorded in the release ledger." in (
        banner.inner_text()
    )
    page.screenshot(path=str(artifacts / "04-hold-lifted.png"), full_page=True)

    row = page.locator(f"#holds tr[data-ami='{held.ami}']")
    text = row.inner_text()
    assert "hold lifted" in text and "by admin: INC-4711 closed: forensics done, the AMI may go" in text
    assert row.get_by_role("button", name="Lift hold").count() == 0
    assert "kept: held" not in text and "too young (1.0 days)" in text  # the report predates the lift
    timeline = row_text(page, "timeline", "release", held.release_id)
    assert "lifted" in timeline and "by admin" in timeline

    tags = ami_tags(story, held.ami)
    assert "ForensicHold" not in tags and "ForensicHoldReason" not in tags
    hold = record(story, held.release_id)["forensic_hold"]
    assert hold["released_by"] == "admin" and hold["release_reason"].startswith("INC-4711 closed")
    assert hold["reason"] == "INC-4711 5xx after 1.3.1" and hold["released_at"]  # the hold itself is kept


def test_make_release_hold_lifts_a_hold_from_a_plain_shell(
    admin: Any, api_server: ApiServer, story: Story, tmp_path: Path
) -> None:
    """As the README says: `make release-hold APP=… RELEASE=… REASON=…` against the sandbox,
    from a shell with no virtualenv, no PYTHONPATH and no Airflow settings."""
    held = story["1.1.0"]
    env_file = tmp_path / "env.sh"
    sandbox_env = {
        "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"],
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AIRFLOW_CONN_AWS_DEFAULT": os.environ["AIRFLOW_CONN_AWS_DEFAULT"],
        "AIRFLOW__AMI_RELEASE__LEDGER_BUCKET": LEDGER_BUCKET,
    }
    env_file.write_text("".join(f"export {k}='{v}'\n" for k, v in sandbox_env.items()))
    shell = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AWS_", "PYTHON", "VIRTUAL_ENV"))}
    shell["AIRFLOW_HOME"] = str(tmp_path / "airflow-home")

    def make(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["make", "-s", "release-hold", f"SANDBOX_ENV={env_file}", *args],
            cwd=REPO,
            env=shell,
            capture_output=True,
            text=True,
            timeout=300,
        )

    usage = make(f"APP={APP}")
    assert usage.returncode != 0 and "usage: make release-hold APP=" in usage.stdout + usage.stderr

    unknown = make(f"APP={APP}", "RELEASE=demo-web-9.9.9-000000000000", "REASON=INC-1001 closed, forensics done")
    assert unknown.returncode != 0
    assert "there is no ledger record of release demo-web-9.9.9-000000000000" in unknown.stderr

    done = make(f"APP={APP}", f"RELEASE={held.release_id}", 'REASON=INC-1001 closed, it\'s "fine" & done')
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Hold lifted on {APP} 1.1.0 ({held.release_id}): {held.ami} ({REGION})" in done.stdout
    assert "ForensicHold" not in ami_tags(story, held.ami)
    hold = record(story, held.release_id)["forensic_hold"]
    assert hold["release_reason"] == 'INC-1001 closed, it\'s "fine" & done'
    assert hold["released_by"].endswith("(command line)")

    page = open_app(admin, api_server)
    text = row_text(page, "holds", "ami", held.ami)
    assert "hold lifted" in text and '(command line): INC-1001 closed, it\'s "fine" & done' in text


def test_during_a_refresh_the_page_shows_instances_per_ami_and_progress(
    admin: Any, api_server: ApiServer, story: Story, aws_sandbox: Any, artifacts: Path
) -> None:
    w = story.writer
    rb2 = story["rb2"]
    started = story.now - timedelta(minutes=8)  # baked and smoke-tested, now rolling out
    new = w.release("1.4.0", started, minutes=0, by="frank", notes="nginx 1.27", write_record=False)
    aws_sandbox.configure(checkpoint_delay_scale=100.0)  # stay at the 34 % checkpoint for the whole test
    refresh_id = w.refresh_to(new, checkpoints=[34, 100], wait=False)
    try:
        w.wait_refresh(refresh_id, lambda r: "checkpoint" in (r.get("StatusReason") or ""))
        page = open_app(admin, api_server)
        page.screenshot(path=str(artifacts / "05-refresh-in-progress.png"), full_page=True)
        live = page.locator("#live")
        progress = live.locator(f"[data-refresh='{refresh_id}']")
        text = progress.inner_text()
        # 3 instances, 66 % healthy: one at a time; the first batch past 34 % is the second (66 %)
        assert "instance refresh InProgress" in text and "66 % complete" in text
        assert "1 instance still to update" in text and "Waiting for checkpoint at 34%" in text
        assert background(progress.locator(".status")) == BLUE
        assert progress.locator(".bar > span").get_attribute("style") == "width: 66%"

        rolling = live.locator(f"tr[data-ami='{new.ami}']")
        assert rolling.locator("td").first.inner_text().startswith("2")
        assert "rolling out" in rolling.inner_text() and new.release_id in rolling.inner_text()
        assert rolling.get_by_role("link", name="open the run").get_attribute("href") == (
            f"/dags/ami_release/runs/{quote(new.run_id, safe='')}"
        )
        old = live.locator(f"tr[data-ami='{rb2.ami}']")
        assert old.locator("td").first.inner_text().startswith("1") and rb2.release_id in old.inner_text()
    finally:
        w.asg.cancel_instance_refresh(AutoScalingGroupName=GROUP)
        aws_sandbox.configure(checkpoint_delay_scale=1.0)


def test_release_bundles_next_to_the_records_are_not_read_as_records(
    admin: Any, api_server: ApiServer, story: Story
) -> None:
    """main stores release bundles under the records' prefix (releases/<app>/<id>/bundle.tar.gz)."""
    rid = story["1.2.0"].release_id
    story.writer.s3.put_object(
        Bucket=LEDGER_BUCKET, Key=f"releases/{APP}/{rid}/bundle.tar.gz", Body=b"\x1f\x8b\x08\x00not json"
    )
    page = open_app(admin, api_server)
    assert page.locator(".banner.warn").count() == 0, page.locator(".banner.warn").all_inner_texts()
    assert page.locator("#timeline tbody tr").count() == 7


def test_drift_found_by_ami_drift_is_shown_per_region_until_cleared(
    admin: Any, api_server: ApiServer, story: Story, artifacts: Path
) -> None:
    """A drift record as ami_drift writes it (tests/drift/test_drift_e2e.py makes real ones) shows
    as a warning above Live now: where, since when, what changed, the drift run; gone once cleared."""
    from amirelease.drift.report import read_plan
    from amirelease.drift.store import DriftStore
    from tests.drift.test_drift_pure import PLAN

    store = DriftStore(story.writer.s3, LEDGER_BUCKET)
    live = story["rb2"]
    first = (story.now - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    store.put(
        {
            "app": APP,
            "region": REGION,
            "stage": None,
            "release_id": live.release_id,
            "version": "1.2.0",
            "first_seen": first,
            "last_seen": story.now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "resources": [d.to_dict() for d in read_plan(PLAN).drifted],
            "run": {"dag_id": "ami_drift", "run_id": "scheduled__2026-12-05T09:00:00+00:00"},
        }
    )
    try:
        page = open_app(admin, api_server)
        banner = page.locator(f"#drift .banner[data-region='{REGION}']")
        text = banner.inner_text()
        page.screenshot(path=str(artifacts / "20-drift.png"), full_page=True)
        for words in (
            f"Drift in {REGION}",
            f"since {first[:16].replace('T', ' ')} UTC (3 h",
            f"against release 1.2.0 {live.release_id}",
            "aws_autoscaling_group.web changed outside a release: max_size: 6 -> 10 (a release would update it)",
            "aws_security_group.web deleted outside Terraform",
        ):
            assert words in text, (words, text)
        link = banner.get_by_role("link", name="the drift run")
        assert link.get_attribute("href") == "/dags/ami_drift/runs/" + quote(
            "scheduled__2026-12-05T09:00:00+00:00", safe=""
        )
    finally:
        store.clear(APP, REGION)
    page = open_app(admin, api_server)
    assert page.locator("#drift .banner").count() == 0
    assert "No drift recorded" in page.locator("#drift").inner_text()


def test_a_deregistered_release_ami_is_restored_from_the_page(
    admin: Any, viewer: Any, api_server: ApiServer, story: Story, artifacts: Path
) -> None:
    """Issue 24: a release AMI that retention (or a person) deregistered into the Recycle Bin is
    shown as restorable; a release manager restores it from the page with a reason (snapshots,
    then the image, held with who and why); a viewer may not. Last in the file: it changes the story."""
    gone = story["1.3.0"]
    ec2 = story.writer.ec2
    image = ec2.describe_images(ImageIds=[gone.ami])["Images"][0]
    if str(image.get("DeregistrationProtection") or "").startswith("enabled"):
        ec2.disable_image_deregistration_protection(ImageId=gone.ami)
    # as retention does before deregistering: the tag the account's Recycle Bin rule keeps
    ec2.create_tags(Resources=[gone.ami], Tags=[{"Key": "AmiRetention", "Value": "recycle-bin"}])
    ec2.deregister_image(ImageId=gone.ami)
    assert [i["ImageId"] for i in ec2.list_images_in_recycle_bin(ImageIds=[gone.ami])["Images"]] == [gone.ami]
    url = f"{api_server.base}/releases/apps/{APP}/images/{REGION}/{gone.ami}/restore"

    refused = viewer.request.post(url, form={"reason": "INC-9 I am only a viewer"})
    assert refused.status == 403 and "needs the permission to trigger ami_rollback" in refused.text()
    viewer_page = open_app(viewer, api_server)
    row = viewer_page.locator(f"#holds tr[data-ami='{gone.ami}']")
    assert row.get_by_role("button", name="Restore").count() == 0
    assert "Restoring an AMI needs the permission to trigger ami_rollback" in row.inner_text()
    viewer_page.close()

    page = open_app(admin, api_server)
    row = page.locator(f"#holds tr[data-ami='{gone.ami}']")
    assert "deregistered; restorable from the Recycle Bin" in row.inner_text()
    too_short = admin.request.post(url, form={"reason": "ok"})
    assert too_short.status == 400 and "a reason of at least 10 characters is needed" in too_short.text()
    not_ours = admin.request.post(url.replace(gone.ami, story["1.2.0"].ami), form={"reason": "INC-9 not binned"})
    assert not_ours.status == 404 and "release AMIs in the Recycle Bin of us-east-1" in not_ours.text()
    assert [i["ImageId"] for i in ec2.list_images_in_recycle_bin(ImageIds=[gone.ami])["Images"]] == [gone.ami]

    row.get_by_role("textbox").fill("INC-4711: web-a still launches 1.3.0")
    row.get_by_role("button", name="Restore").click()
    banner = page.get_by_role("status")
    banner.wait_for()
    assert banner.inner_text().startswith(f"{gone.ami} (1.3.0) is back from the Recycle Bin and held"), (
        banner.inner_text()
    )
    page.screenshot(path=str(artifacts / "05-ami-restored.png"), full_page=True)

    row = page.locator(f"#holds tr[data-ami='{gone.ami}']")
    assert row.get_by_role("button", name="Restore").count() == 0 and "Recycle Bin" not in row.inner_text()
    assert ec2.list_images_in_recycle_bin(ImageIds=[gone.ami])["Images"] == []
    tags = ami_tags(story, gone.ami)  # registered again, under a hold naming who and why
    assert "restored" in tags["ForensicHold"] and "by admin" in tags["ForensicHold"], tags
    assert "INC-4711: web-a still launches 1.3.0" in tags["ForensicHoldReason"], tags
