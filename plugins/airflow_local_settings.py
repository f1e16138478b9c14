"""Airflow cluster policies of the release system (Airflow imports this module by name in every
process; the plugins folder is on its sys.path). Only routing: amirelease/routing.py."""

from __future__ import annotations

from typing import Any


def task_instance_mutation_hook(task_instance: Any, dag_run: Any = None) -> None:
    """Bake and Terraform tasks go to the queue of the app's toolchain (the run's conf)."""
    from amirelease.routing import route_task_instance

    route_task_instance(task_instance, dag_run)
