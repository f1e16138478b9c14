"""The sandbox command line:  python -m sandbox {up,down,env,demo,airflow}

  up       start the local AWS account (moto + extensions) and Vault (OpenBao); block until Ctrl-C
  down     stop a sandbox started with `up` in another terminal
  demo     start the sandbox, run two real releases of the example app through Airflow (the first
           creates its fleet with Terraform, the second rolls a new AMI out with an instance refresh)
           (airflow standalone: scheduler, triggerer, API server), print a summary, stop
  airflow  start the sandbox and `airflow standalone` wired to it; print the UI address and login
  cluster  the docker-compose.yaml shape as processes (Postgres, Redis, OpenBao with TLS, every
           Airflow role with CeleryExecutor and the FAB auth manager); print URLs and users

Everything runs on 127.0.0.1. State (env file, logs, pid) lives in .sandbox/ and Airflow's
home in .airflow/ at the repository root.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from sandbox.runtime import STATE_DIR, SandboxRuntime


def cmd_up(args: argparse.Namespace) -> int:
    rt = SandboxRuntime(
        refresh_batch_seconds=args.refresh_batch_seconds,
        aws_port=args.aws_port,
        state_dir=Path(args.state_dir),
        with_vault=args.vault,
        checkpoint_delay_scale=args.checkpoint_delay_scale,
    )
    t0 = time.monotonic()
    rt.start()
    print(f"sandbox ready in {time.monotonic() - t0:.1f}s")
    print(rt.describe())
    print(f"\nenvironment for Airflow and the AWS CLI: source {rt.env_file}")
    stop = {"flag": False}

    def _stop(*_):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stop["flag"]:
            time.sleep(0.2)
    finally:
        rt.stop()
        print("sandbox stopped")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    return SandboxRuntime.stop_running()


def cmd_cluster(args: argparse.Namespace) -> int:
    from sandbox.cluster import run_cluster

    _sigterm_as_interrupt()
    return run_cluster(api_port=args.api_port)


def _sigterm_as_interrupt() -> None:
    """`kill <pid>` stops Airflow and the sandbox as cleanly as Ctrl-C does."""

    def _raise(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _raise)


def cmd_demo(args: argparse.Namespace) -> int:
    from sandbox.demo import run_demo

    _sigterm_as_interrupt()
    return run_demo(
        version=args.version,
        app=args.app,
        api_port=args.api_port,
        refresh_batch_seconds=args.refresh_batch_seconds,
        keep_running=args.keep,
        first_version=args.first_version,
    )


def cmd_airflow(args: argparse.Namespace) -> int:
    from sandbox.demo import run_airflow

    _sigterm_as_interrupt()
    return run_airflow(api_port=args.api_port, refresh_batch_seconds=args.refresh_batch_seconds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m sandbox", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the sandbox and block")
    up.add_argument("--refresh-batch-seconds", type=float, default=3.0)
    up.add_argument("--aws-port", type=int, default=5055, help="0: any free port (see env.sh)")
    up.add_argument("--state-dir", default=str(STATE_DIR), help="where env.sh, the pid and logs go")
    up.add_argument("--no-vault", dest="vault", action="store_false", help="AWS only, no OpenBao dev server")
    up.add_argument(
        "--checkpoint-delay-scale", type=float, default=1.0, help="scale instance-refresh checkpoint delays"
    )
    sub.add_parser("down", help="stop a running sandbox")
    demo = sub.add_parser("demo", help="run two releases through Airflow against the sandbox")
    demo.add_argument("--app", default="demo-web")
    demo.add_argument("--first-version", default="1.0.0", help="the first release (creates the fleet)")
    demo.add_argument("--version", default="1.1.0", help="the second release (a new image, an instance refresh)")
    demo.add_argument("--api-port", type=int, default=8080)
    demo.add_argument("--refresh-batch-seconds", type=float, default=3.0)
    demo.add_argument("--keep", action="store_true", help="leave Airflow and the sandbox running after the release")
    af = sub.add_parser("airflow", help="sandbox + airflow standalone")
    af.add_argument("--api-port", type=int, default=8080)
    af.add_argument("--refresh-batch-seconds", type=float, default=3.0)
    cl = sub.add_parser("cluster", help="the docker-compose shape as processes: Postgres, Redis, OpenBao, every role")
    cl.add_argument("--api-port", type=int, default=0, help="0: a free port")
    args = p.parse_args(argv)
    cmds = {"up": cmd_up, "down": cmd_down, "demo": cmd_demo, "airflow": cmd_airflow, "cluster": cmd_cluster}
    return cmds[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
