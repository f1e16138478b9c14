"""Benchmark: what `terraform plan -refresh=false` would save on demo-web's module (issue 21).

Starts the sandbox (AWS + Vault), creates demo-web's fleet with a real apply of its module
(through the pipeline's own ApplyInfrastructureOperator, the vendor image standing in for the
AMI), then times `terraform plan` on that state in one initialised working folder: the
pipeline's plan (with the refresh of the managed resources) and `-refresh=false`, alternating,
``--runs`` times each. Data sources are read by both (Terraform always reads them at plan).
Prints the median and the range of each, and whether the two plans agree.

    .venv/bin/python bench/terraform_refresh.py [--runs 5]
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    from sandbox.runtime import SandboxRuntime

    rt = SandboxRuntime(refresh_batch_seconds=1)
    rt.start()
    try:
        os.environ.update(rt.env())
        os.environ["AIRFLOW__AMI_RELEASE__TERRAFORM_WORKSPACE_DIR"] = tempfile.mkdtemp(prefix="tf-refresh-bench-")
        from amirelease import bundle
        from amirelease.handoffs import BakeResult, ReleasePlan
        from amirelease.hooks.terraform import TerraformHook
        from amirelease.ledger import ledger_bucket
        from amirelease.operators.infrastructure import ApplyInfrastructureOperator
        from amirelease.operators.preflight import ReleasePreflightOperator

        run_id = "manual__terraform-refresh-bench"
        raw = ReleasePreflightOperator(
            task_id="preflight", app="demo-web", version="1.0.0", region_name="us-east-1"
        ).execute({"run_id": run_id})
        plan = ReleasePlan.from_xcom(raw)
        bake = BakeResult(
            release_id=plan.release_id,
            ami_id=plan.source_ami,
            amis={plan.home_region: plan.source_ami},
            source_ami=plan.source_ami,
            reused=False,
        ).to_xcom()
        ti = SimpleNamespace(dag_id="ami_release", run_id=run_id, try_number=1)
        op = ApplyInfrastructureOperator(task_id="apply_infrastructure", plan=raw, bake=bake, region_name="us-east-1")
        op.execute({"ti": ti, "run_id": run_id})  # the fleet, as a first release makes it
        print("fleet created; timing plans", flush=True)

        op._terraform = TerraformHook()
        store = bundle.BundleStore(op.clients.s3(), ledger_bucket())
        secrets = op._secrets(plan)
        times: dict[str, list[float]] = {"refresh": [], "-refresh=false": []}
        lines: dict[str, str] = {}
        with bundle.unpacked(store, plan.bundle.key, plan.bundle.sha256) as root:
            with op._module(plan, root, "us-east-1", plan.source_ami, secrets) as (module, env, var_file, _):
                for _ in range(args.runs):
                    for name, extra in (("refresh", []), ("-refresh=false", ["-refresh=false"])):
                        run = op._terraform.run(
                            ["plan", "-json", "-input=false", f"-var-file={var_file}", "-lock=false", *extra],
                            cwd=module,
                            env=env,
                            on_line=lambda _line: None,
                        )
                        assert run.returncode == 0, run.errors
                        times[name].append(run.seconds)
                        lines[name] = run.plan_summary().line()
        secrets.clear()
        for name, vals in times.items():
            print(
                f"plan {name:15} median {statistics.median(vals):5.2f} s  (min {min(vals):.2f}, max {max(vals):.2f}, "
                f"n={len(vals)}): {lines[name]}"
            )
        gain = statistics.median(times["refresh"]) - statistics.median(times["-refresh=false"])
        print(f"-refresh=false would save {gain:.2f} s per plan here")
    finally:
        rt.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
