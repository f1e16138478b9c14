"""Who may do what, with the FAB auth manager (apache-airflow-providers-fab).

Three roles:

* ``Viewer`` (FAB's own): reads everything it can see, triggers nothing.
* ``release-manager`` (ours): everything a Viewer has, plus triggering ``ami_release``,
  ``ami_rollback`` and ``ami_promote``, and answering a stage's gate (approve or reject).
  The trigger rights are DAG-level permissions declared on those DAGs
  (``access_control=RELEASE_MANAGERS_TRIGGER``) and synced by the DAG processor.
* ``Admin`` (FAB's own): everything, including triggering ``ami_retention`` and editing
  connections.

``python -m amirelease.access init`` (run by the compose ``airflow-init`` service after
``airflow db migrate``, before the DAG processor starts) creates the FAB roles, gives
``release-manager`` the Viewer's permissions and, when ``AIRFLOW_ADMIN_PASSWORD`` is set,
creates the first admin user. Other users: ``airflow users create --role <role> ...``.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse  # imported by main(), not when a DAG file imports the permissions

RELEASE_MANAGER = "release-manager"
VIEWER = "Viewer"
ADMIN = "Admin"

# DAG-level permissions: the DAG constructors take these (access_control=...).
# Triggering a run needs "can_create" on its runs and "can_edit" on the DAG (FAB's rule).
RELEASE_MANAGERS_TRIGGER: dict[str, dict[str, set[str]]] = {
    RELEASE_MANAGER: {"DAGs": {"can_read", "can_edit"}, "DAG Runs": {"can_read", "can_create"}},
}
# Beyond the Viewer's: answering a stage's gate (ami_promote's approve task). FAB asks for
# "can_edit" on HITL Detail (a role permission) and on the DAG (access_control above).
RELEASE_MANAGER_EXTRA: tuple[tuple[str, str], ...] = (("can_edit", "HITL Detail"),)
# Read-only for release managers: only Admin (every DAG) may trigger or pause it.
RELEASE_MANAGERS_READ: dict[str, dict[str, set[str]]] = {
    RELEASE_MANAGER: {"DAGs": {"can_read"}, "DAG Runs": {"can_read"}},
}


def init_roles(appbuilder: Any) -> int:
    """Create FAB's roles and ``release-manager`` with every Viewer permission; return how many were added."""
    sm = appbuilder.sm
    sm.sync_roles()
    viewer = sm.find_role(VIEWER)
    role = sm.find_role(RELEASE_MANAGER) or sm.add_role(RELEASE_MANAGER)
    have = {(p.action.name, p.resource.name) for p in role.permissions}
    added = 0
    for perm in viewer.permissions:
        if (perm.action.name, perm.resource.name) not in have:
            sm.add_permission_to_role(role, perm)
            added += 1
    for action, resource in RELEASE_MANAGER_EXTRA:
        if (action, resource) not in have:
            sm.add_permission_to_role(role, sm.create_permission(action, resource))
            added += 1
    return added


def create_admin(appbuilder: Any, username: str, password: str, email: str) -> bool:
    """Create the first admin user unless it exists; True when created."""
    sm = appbuilder.sm
    if sm.find_user(username=username):
        return False
    user = sm.add_user(username, "Admin", "User", email, sm.find_role(ADMIN), password)
    if not user:
        raise RuntimeError(f"could not create admin user {username!r}")
    return True


def cmd_init(args: argparse.Namespace) -> int:
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    with get_application_builder() as appbuilder:
        added = init_roles(appbuilder)
        print(f"roles: Admin, Viewer, {RELEASE_MANAGER} ({added} permission(s) added to {RELEASE_MANAGER})")
        password = os.environ.get("AIRFLOW_ADMIN_PASSWORD", "")
        if password:
            created = create_admin(appbuilder, args.admin_username, password, args.admin_email)
            print(f"admin user {args.admin_username!r}: {'created' if created else 'exists, unchanged'}")
        else:
            print("AIRFLOW_ADMIN_PASSWORD is not set: no admin user created (airflow users create --role Admin ...)")
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m amirelease.access", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    init = sub.add_parser("init", help="create the roles (and the first admin from AIRFLOW_ADMIN_PASSWORD)")
    init.add_argument("--admin-username", default=os.environ.get("AIRFLOW_ADMIN_USERNAME", "admin"))
    init.add_argument("--admin-email", default=os.environ.get("AIRFLOW_ADMIN_EMAIL", "admin@example.invalid"))
    init.set_defaults(func=cmd_init)
    args = p.parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
