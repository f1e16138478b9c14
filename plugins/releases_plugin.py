"""Airflow plugin: the "Releases" page in the Airflow UI (issue 13).

A FastAPI app mounted on the API server at /releases, and an entry in the UI's navigation
that shows it inside Airflow (at /plugin/releases; Airflow 3.3 then mirrors the frame's address
after it, e.g. /plugin/releases/releases/apps/demo-web). The app checks Airflow's login and
permissions itself: see amirelease/ui/webapp.py.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from amirelease.ui.trigger_guard import TriggerGuard
from amirelease.ui.webapp import URL_PREFIX, app


class ReleasesPagePlugin(AirflowPlugin):
    name = "releases_page"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Releases"}]
    # trigger calls of our DAGs: bad params answered in words, runs named after their conf
    fastapi_root_middlewares = [{"middleware": TriggerGuard, "args": [], "kwargs": {}, "name": "ami trigger guard"}]
    external_views = [
        {
            "name": "Releases",
            # relative to Airflow's base URL (the UI sets <base href>), so any [api] base_url works
            "href": URL_PREFIX.lstrip("/") + "/",
            "url_route": "releases",
            "destination": "nav",
            "nav_top_level": True,
        }
    ]
