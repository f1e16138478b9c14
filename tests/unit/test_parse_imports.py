"""What a DAG file may import at parse time (issue 21: ≤ 50 ms of parse beyond Airflow's own import).

The DAG processor imports every DAG file again and again; what only a task's ``execute`` needs
(Vault's client, git, Terraform, Packer, the hand-off dataclasses, the catalog's schema, the
retention logic, boto3's typed stubs, Airflow's ORM) must be imported there, not at the top of a
module a DAG file imports. Checked by what lands in ``sys.modules`` of a fresh interpreter that
imported one DAG file, not by a timing (the parse time itself: ``bench/critical_path.py
--parse-only``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

DAG_FILES = sorted(p.stem for p in (REPO / "dags").glob("*.py"))

# Modules that must not be imported by parsing any DAG file: name -> why (what imports it instead).
HEAVY: dict[str, str] = {
    "hvac": "Vault's client: the tasks that read secrets import hooks/vault.py",
    "amirelease.hooks.vault": "the secrets' resolution (and the catalog): the tasks' execute",
    "amirelease.hooks.git_source": "git access for git-sourced apps: preflight's execute",
    "amirelease.sources": "imports git_source",
    "amirelease.hooks.terraform": "the Terraform runner: the Terraform tasks' execute",
    "amirelease.hooks.packer": "the Packer runner: the bake's execute",
    "amirelease.hooks.ec2_release": "imports the retention model: the bake's and record's execute",
    "amirelease.handoffs": "the hand-off dataclasses (~15): read and built in execute",
    "amirelease.catalog": "dataclasses, regexes, the JSON schema: parse needs only catalog_index.py",
    "amirelease.bundle": "tarfile, the bundle's packing: execute",
    "amirelease.ledger": "the ledger's S3 records: execute",
    "amirelease.aws": "the typed clients (S3, SSM, STS hooks): execute",
    "amirelease.triggers.instance_refresh": "the deferred wait's trigger: the wait's execute",
    "airflow.providers.standard.operators.trigger_dagrun": "pulls in Airflow's ORM models (roll_forward's execute)",
    "airflow.models.dagrun": "Airflow's ORM: a DAG file never needs it",
    "airflow.models.taskinstance": "Airflow's ORM: a DAG file never needs it",
}
# The retention package: its logic is the retention tasks' execute; a DAG file may import only these.
RETENTION_AT_PARSE = {"amirelease.retention", "amirelease.retention.iam_actions", "amirelease.retention.pacing"}
HEAVY_PREFIXES = ("mypy_boto3_",)  # boto3's typed stubs: only under TYPE_CHECKING

PROBE = r"""
import json, sys, importlib
sys.path[:0] = sys.argv[2].split(",")
import airflow.sdk, airflow.providers.amazon.aws.operators.base_aws  # Airflow's own import, as the bench
importlib.import_module(sys.argv[1])
print("MODULES " + json.dumps(sorted(sys.modules)))
"""


def loaded_by(module: str) -> set[str]:
    """sys.modules of a fresh interpreter after importing ``module`` with the DAG processor's paths."""
    paths = ",".join(str(REPO / p) for p in ("plugins", "dags", "."))
    out = subprocess.run(
        [sys.executable, "-c", PROBE, module, paths],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        cwd=REPO,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("MODULES "))
    return set(json.loads(line.removeprefix("MODULES ")))


def too_heavy(modules: set[str]) -> dict[str, str]:
    found = {m: why for m, why in HEAVY.items() if m in modules}
    found |= {
        m: "the retention logic: the retention tasks' execute"
        for m in modules
        if m.startswith("amirelease.retention.") and m not in RETENTION_AT_PARSE
    }
    found |= {m: "typed stubs: import under TYPE_CHECKING" for m in modules if m.startswith(HEAVY_PREFIXES)}
    return found


@pytest.mark.parametrize("dag_file", DAG_FILES)
def test_dag_file_imports_nothing_heavy_at_parse(dag_file):
    found = too_heavy(loaded_by(dag_file))
    assert not found, f"dags/{dag_file}.py imports at parse time what only a task needs: " + "; ".join(
        f"{m} ({why})" for m, why in sorted(found.items())
    )


@pytest.mark.parametrize(
    ("module", "heavy"),
    [
        ("airflow.providers.hashicorp.hooks.vault", {"hvac"}),
        ("amirelease.sources", {"amirelease.sources", "amirelease.hooks.git_source", "amirelease.catalog"}),
        ("amirelease.retention.aws", {"amirelease.retention.aws", "amirelease.retention.decide"}),
    ],
)
def test_the_check_sees_a_heavy_import(module, heavy):
    """The probe itself: modules that do import heavy ones are reported."""
    found = too_heavy(loaded_by(module))
    assert heavy <= set(found), found
