"""Toolchain routing by Airflow's cluster policy (amirelease/routing.py, plugins/airflow_local_settings.py).

The end-to-end release test checks the queue of the task instances its real DAG run created
(tests/release/test_release_e2e.py), and the cluster test the queue and the worker each ran on."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from amirelease import routing


def _ti(operator: str, queue: str = "default") -> SimpleNamespace:
    return SimpleNamespace(operator=operator, queue=queue)


def test_toolchain_tasks_go_to_the_apps_toolchain_queue():
    run = SimpleNamespace(conf={"app": "demo-win"})
    for op in ("BakeAmiOperator", "CheckInfrastructureOperator", "ApplyInfrastructureOperator"):
        ti = _ti(op)
        routing.route_task_instance(ti, run)
        assert ti.queue == "packer-chef-windows", op
    other = _ti("SmokeTestOperator")
    routing.route_task_instance(other, run)
    assert other.queue == "default"


@pytest.mark.parametrize("conf", [{}, {"app": "no-such-app"}, {"app": "../apps/demo-web"}, {"app": 3}, None])
def test_what_cannot_be_routed_keeps_its_queue(conf):
    ti = _ti("BakeAmiOperator")
    routing.route_task_instance(ti, SimpleNamespace(conf=conf))
    assert ti.queue == "default"
    routing.route_task_instance(ti, None)  # refresh_from_task before the run is bound
    assert ti.queue == "default"


def test_the_list_matches_the_operators_that_run_on_the_toolchain():
    from amirelease.operators import bake, infrastructure, lock, preflight, record, rollout, smoke, verify

    classes = {
        obj.__name__: obj
        for mod in (bake, infrastructure, lock, preflight, record, rollout, smoke, verify)
        for obj in vars(mod).values()
        if isinstance(obj, type)
        and obj.__module__ == mod.__name__
        and obj.__name__.endswith("Operator")
        and not obj.__name__.startswith("_")
    }
    assert {n for n, c in classes.items() if getattr(c, "runs_on_toolchain", False)} == routing.TOOLCHAIN_OPERATORS


def test_airflow_loads_the_policy_from_the_plugins_folder():
    import airflow.settings as settings

    assert not getattr(settings.task_instance_mutation_hook, "is_noop", True)
    ti = _ti("ApplyInfrastructureOperator")
    settings.task_instance_mutation_hook(ti, dag_run=SimpleNamespace(conf={"app": "demo-web"}))
    assert ti.queue == "packer-chef-linux"
