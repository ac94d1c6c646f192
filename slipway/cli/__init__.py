"""The `slipway` command: `slipway check` before a push; `slipway demo` and `slipway serve` on the
embedded emulator; `slipway bootstrap` and `slipway package` for deploying Slipway itself to an AWS
account."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _exit_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the emulator's cleanup (node containers) runs."""
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slipway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="push -> deploy -> prune -> teardown on the embedded emulator")
    demo.add_argument("--json", action="store_true", help="print one JSON object instead of progress")
    demo.add_argument("--verbose", action="store_true", help="also show the functions' own logs")
    demo.add_argument("--nodes", type=int, default=1, help="swarm nodes to run (default 1)")
    demo.add_argument(
        "--real-nodes",
        action="store_true",
        help="bake the node image with the swarm_node role for real and run each "
        "instance as a container with its own dockerd (root and Docker needed)",
    )

    serve = sub.add_parser("serve", help="the webhook endpoint and an AWS endpoint, on the emulator")
    serve.add_argument("--port", type=int, default=8000, help="webhook HTTP port (default 8000)")
    serve.add_argument("--aws-port", type=int, default=5000, help="emulated AWS endpoint port (default 5000)")
    serve.add_argument("--webhook-secret", default=None, help="secret GitHub signs with (default: random, printed)")
    serve.add_argument("--nodes", type=int, default=1, help="swarm nodes per deployment (default 1)")
    serve.add_argument(
        "--real-nodes", action="store_true", help="real node containers, as for `slipway demo --real-nodes`"
    )
    for command in (demo, serve):
        command.add_argument(
            "--repo",
            default=None,
            help="the git repository the local GitHub serves (default: this checkout); SLIPWAY_* variables in "
            "the shell override the stage's settings",
        )

    check = sub.add_parser(
        "check",
        help="check a Compose file as a push would, with no AWS account (exit 1 with every problem)",
    )
    check.add_argument(
        "file", nargs="?", default=None, help="the Compose file (default: stack.yml, compose.yaml, ... at the top)"
    )
    check.add_argument(
        "--var",
        "--vars",
        dest="variables",
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        help="a variable the environment has (/slipway/<environment>/vars/NAME); repeatable or comma-separated; "
        f"without a value it is assumed set (to {check_mod_assumed()!r})",
    )
    check.add_argument("--json", action="store_true", help="print one JSON object")

    deploy = sub.add_parser("deploy", help="deploy a commit of the repository the environment runs (a rollback too)")
    deploy.add_argument("commit", help="the full commit id (40 hex)")
    deploy.add_argument("--repository", default=None, help="OWNER/NAME (default: the one the environment runs)")
    runs = sub.add_parser("runs", help="the environment's latest deploy and teardown runs")
    runs.add_argument("--limit", type=int, default=10, help="how many (default 10)")
    for command in (deploy, runs):
        command.add_argument("--stage", "--environment", dest="environment", default="dev", help="(default dev)")
        command.add_argument("--endpoint-url", default=None, help="AWS endpoint (slipway serve prints its own)")
        command.add_argument("--region", default=None, help="AWS region (default: the shell's)")
        command.add_argument("--json", action="store_true", help="print JSON")

    boot = sub.add_parser(
        "bootstrap",
        help="deploy what `chalice deploy` does not (.chalice/resources.yaml) "
        "and write its outputs into .chalice/config.json",
    )
    boot.add_argument("--stage", default="dev", help="Chalice stage (default dev)")
    boot.add_argument("--project-dir", default=".", help="the Slipway checkout (default .)")
    boot.add_argument("--delete", action="store_true", help="empty the source bucket and delete the stack")

    package = sub.add_parser("package", help="write the CloudFormation the deploy path creates into dist/")
    package.add_argument("--stage", action="append", default=[], help="stage (repeatable; default all)")
    package.add_argument("--project-dir", default=".", help="the Slipway checkout (default .)")
    package.add_argument("--out", default="dist", help="output folder (default dist)")

    args = parser.parse_args(argv)
    if args.command == "check":
        from slipway.cli import check as check_mod

        return check_mod.run(args.file, args.variables, args.json)
    if args.command in ("deploy", "runs"):
        from slipway.cli import operate

        where = {"environment": args.environment, "endpoint_url": args.endpoint_url, "region": args.region}
        if args.command == "deploy":
            return operate.deploy(args.commit, repository=args.repository, as_json=args.json, **where)
        return operate.runs(as_json=args.json, limit=max(1, min(args.limit, 100)), **where)
    if args.command == "bootstrap":
        from pathlib import Path

        from slipway.deploy import bootstrap

        try:
            if args.delete:
                bootstrap.delete(Path(args.project_dir), args.stage)
            else:
                bootstrap.deploy(Path(args.project_dir), args.stage)
        except bootstrap.BootstrapError as exc:
            print(f"slipway bootstrap: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "package":
        from pathlib import Path

        from slipway.deploy import package as package_mod

        package_mod.run(Path(args.project_dir), args.stage, Path(args.out))
        return 0
    _exit_on_sigterm()
    if args.command == "demo":
        from slipway.cli import demo as demo_mod

        return demo_mod.run(
            as_json=args.json, verbose=args.verbose, nodes=args.nodes, real_nodes=args.real_nodes, repo=args.repo
        )
    from slipway.cli import serve as serve_mod

    return serve_mod.run(
        port=args.port,
        aws_port=args.aws_port,
        secret=args.webhook_secret,
        nodes=args.nodes,
        real_nodes=args.real_nodes,
        repo=args.repo,
    )


def check_mod_assumed() -> str:
    from slipway.cli.check import ASSUMED

    return ASSUMED


def repository(path: str | None) -> Path | None:
    """`--repo`: a git work tree (its top level), or SystemExit saying what is wrong."""
    if path is None:
        return None
    import subprocess

    found = subprocess.run(["git", "-C", path, "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if found.returncode != 0:
        raise SystemExit(f"--repo {path}: not a git repository ({found.stderr.strip()})")
    return Path(found.stdout.strip())


def shell_settings() -> dict[str, str]:
    """The SLIPWAY_* variables of the shell: they override the stage's for serve and demo."""
    import os

    return {k: v for k, v in os.environ.items() if k.startswith("SLIPWAY_")}


if __name__ == "__main__":
    sys.exit(main())
