"""The Releases page in the Airflow UI: what runs where, each app's releases, holds and retention.

collect   reads AWS and the ledger (read-only) into plain data
present   turns that data into the rows a person reads (pure)
webapp    the FastAPI app mounted on Airflow's API server, behind Airflow's login and permissions

The plugin that mounts it is plugins/releases_plugin.py.
"""
