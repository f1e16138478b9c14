"""plugins/amirelease/auth.py: FAB's auth manager, whose gate check also matches a named approver
by user name (real FAB user objects, the real class; no API server needed for this one check)."""

from __future__ import annotations

from airflow.providers.fab.auth_manager.fab_auth_manager import FabAuthManager
from airflow.providers.fab.auth_manager.models import User

from amirelease.auth import ReleaseFabAuthManager


def _user(uid: int, name: str) -> User:
    user = User()
    user.id, user.username = uid, name
    return user


def test_a_named_approver_matches_by_user_name_where_stock_fab_refuses_them():
    ann, bob = _user(7, "ann"), _user(8, "bob")
    named = {"ann"}  # what the gate writes from approval.approvers
    assert ReleaseFabAuthManager().is_authorized_hitl_task(assigned_users=named, user=ann)
    assert not ReleaseFabAuthManager().is_authorized_hitl_task(assigned_users=named, user=bob)
    # why the subclass exists: FAB compares its numeric ids, which the worker cannot know
    assert not FabAuthManager().is_authorized_hitl_task(assigned_users=named, user=ann)
    # ids still match as FAB's own (an assignment made by id elsewhere keeps working)
    assert ReleaseFabAuthManager().is_authorized_hitl_task(assigned_users={"8"}, user=bob)
