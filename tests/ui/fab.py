"""A real `airflow api-server` with the deployment's auth manager (FAB's, amirelease.auth) on the
tests' metadata DB: FAB's tables migrated, the roles access.py makes, users in them, and
ami_promote's DAG-level permissions synced, as the compose deployment's airflow-init and DAG
processor do. Users: admin (Admin), rm and ops (release-manager), viewer (Viewer).

``python -m tests.ui.fab`` (run by FabApiServer.prepare, with the server's environment) does the
FAB part in one process: roles, users (passwords from stdin), ami_promote's permissions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO
from tests.ui.server import ApiServer

FAB_USERS = {"admin": "Admin", "rm": "release-manager", "ops": "release-manager", "viewer": "Viewer"}
AUTH_MANAGER = "amirelease.auth.ReleaseFabAuthManager"  # docker-compose.yaml's


class FabApiServer(ApiServer):
    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.passwords = {user: f"{user}-pw-{self.port}" for user in FAB_USERS}

    def env(self) -> dict[str, str]:
        env = super().env()
        env["AIRFLOW__CORE__AUTH_MANAGER"] = AUTH_MANAGER
        return env

    def prepare(self) -> FabApiServer:
        """FAB's tables, roles, users and ami_promote's permissions (before start)."""
        airflow = Path(sys.executable).with_name("airflow")
        users = json.dumps({u: [FAB_USERS[u], p] for u, p in self.passwords.items()})
        steps = (([str(airflow), "fab-db", "migrate"], None), ([sys.executable, "-m", "tests.ui.fab"], users))
        for argv, given in steps:
            done = subprocess.run(
                argv, env=self.env(), cwd=str(REPO), input=given, capture_output=True, text=True, timeout=300
            )
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(argv[-3:])} failed: {done.stderr[-2000:]}")
        return self


def _prepare(users: dict[str, list[str]]) -> None:
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    from amirelease.access import init_roles
    from tests.release.conftest import load_dag

    with get_application_builder() as appbuilder:
        sm = appbuilder.sm
        init_roles(appbuilder)
        for name, (role_name, password) in users.items():
            role = sm.find_role(role_name)
            user = sm.find_user(username=name)
            if user is None:
                user = sm.add_user(name, name, "Tester", f"{name}@example.invalid", role, password)
                assert user, f"could not create FAB user {name}"
            else:
                user.roles = [role]
                sm.update_user(user)
                sm.reset_password(user.id, password)
        dag = load_dag("ami_promote")  # its access_control: release managers may trigger and answer it
        sm.sync_perm_for_dag(dag.dag_id, dag.access_control)


if __name__ == "__main__":
    _prepare(json.loads(sys.stdin.read()))
