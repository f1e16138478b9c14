"""Drift: the live resources of an app compared with its current release's Terraform definition.

``report.py`` is pure (Terraform's JSON plan -> drift in words; the drift record's life),
``store.py`` keeps one small record per app × region in the ledger bucket, and
``operators.py`` holds the ``ami_drift`` DAG's tasks. See docs/drift.md.
"""
