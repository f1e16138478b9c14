"""The deployment's auth manager: FAB's, with one change for the gates' named approvers.

A stage may name who answers its gate (``approval.approvers`` in the app's definition: Airflow
user names). The gate hands them to Airflow's HITL request as ``assigned_users``, and Airflow's
API then asks the auth manager whether the answering user is one of them. FAB compares its
*numeric* user id, which a worker cannot know when it writes the request (it has no access to
the user table), so a user named by the app would be refused. Here a user also matches by user
name. Nothing else changes: the role check (may this user edit ``ami_promote``'s runs and HITL
details: release-manager, admin; access.py) comes first in Airflow's API, so naming a viewer
grants nothing. The catalog refuses an all-digit name, so a name never matches a numeric id.

The class name must contain "FabAuthManager": Airflow's DAG processor syncs DAG-level
permissions (``access_control``: who may trigger ami_release, answer a gate) only when the
configured ``[core] auth_manager`` path contains that word (``dag_processing/collection.py``), and
its database cleanup looks for it the same way. The cluster test caught that with a first name.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.fab.auth_manager.fab_auth_manager import FabAuthManager


class ReleaseFabAuthManager(FabAuthManager):
    """FAB's auth manager; a gate's assigned users match by user name as well as by id."""

    def is_authorized_hitl_task(self, *, assigned_users: set[str], user: Any) -> bool:
        if user.get_name() in assigned_users:
            return True
        return bool(super().is_authorized_hitl_task(assigned_users=assigned_users, user=user))
