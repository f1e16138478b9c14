"""Fixtures for the Releases page tests: the sandbox with a release history, a real Airflow
API server with this repo's plugins, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.ui.server import LEDGER_BUCKET, ApiServer
from tests.ui.story import Story, write

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / ".artifacts" / "ui"


@pytest.fixture(scope="module")
def ledger_setting() -> Iterator[None]:
    saved = os.environ.get("AIRFLOW__AMI_RELEASE__LEDGER_BUCKET")
    os.environ["AIRFLOW__AMI_RELEASE__LEDGER_BUCKET"] = LEDGER_BUCKET
    yield
    if saved is None:
        os.environ.pop("AIRFLOW__AMI_RELEASE__LEDGER_BUCKET", None)
    else:
        os.environ["AIRFLOW__AMI_RELEASE__LEDGER_BUCKET"] = saved


def end_leftover_runs() -> None:
    """Runs these tests trigger through the API stay queued (no scheduler runs here) and the
    metadata DB outlives a session: the trigger guard would answer a new trigger of the same app
    with 409 ("already being released"). Fail them, as a scheduler would have ended them."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    from amirelease.ui.trigger_guard import GUARDED_DAGS

    with create_session() as session:
        session.query(DagRun).filter(
            DagRun.dag_id.in_(GUARDED_DAGS), DagRun.state.in_([DagRunState.QUEUED, DagRunState.RUNNING])
        ).update({DagRun.state: DagRunState.FAILED}, synchronize_session=False)


@pytest.fixture(scope="module")
def api_server(aws_sandbox: Any, airflow_db: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """`airflow api-server` with the plugins folder of this repo, aws_default -> the sandbox."""
    end_leftover_runs()
    server = ApiServer(tmp_path_factory.mktemp("api-server")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def story(aws_sandbox: Any, ledger_setting: None, api_server: ApiServer) -> Story:
    """The sandbox reset and filled with demo-web's history (while the API server starts)."""
    aws_sandbox.configure(refresh_batch_seconds=0.2, checkpoint_delay_scale=1.0)
    aws_sandbox.reset()
    s = write(aws_sandbox)
    api_server.wait_ready()
    return s


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: run `make setup` (it installs Debian's chromium) or set CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # Playwright starts Chromium with a fresh temporary --user-data-dir of its own.
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def artifacts(request: pytest.FixtureRequest) -> Path:
    """Screenshots, kept after the run (gitignored): .artifacts/ui/<test module>/."""
    path = ARTIFACTS / Path(str(request.node.name)).stem
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    return path


def login(browser: Any, server: ApiServer, user: str, land: str = "/releases/") -> Any:
    """A browser context logged in through Airflow's own login form, landed on ``land``."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(f"{server.base}/auth/login?next={server.base}{land}")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(server.passwords[user])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{server.base}{land}**")
    return context
