"""`slipway serve`: the webhook endpoint on 127.0.0.1:PORT and the emulated AWS API on
127.0.0.1:AWS_PORT, both backed by one embedded emulator in this process, until interrupted."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time

from slipway.emulator import Emulator
from slipway.follow import follow


def _watch(emu: Emulator, stop: threading.Event) -> None:
    """Print the progress of every execution that starts while serving."""
    sfn = emu.client("stepfunctions")
    followed: set[str] = set()
    while not stop.wait(0.5):
        for arn in emu.arns.values():
            for execution in sfn.list_executions(stateMachineArn=arn)["executions"]:
                if execution["executionArn"] in followed:
                    continue
                followed.add(execution["executionArn"])
                print(f"\nExecution {execution['executionArn']}", flush=True)
                threading.Thread(target=_report, args=(emu, execution["executionArn"]), daemon=True).start()


class _Lines:
    """Prefix whole lines with the execution's name (follow() writes a state's line in two parts)."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.buffer = prefix, ""

    def __call__(self, text: str, end: str = "\n") -> None:
        self.buffer += text + end
        while "\n" in self.buffer:
            line, self.buffer = self.buffer.split("\n", 1)
            if line.strip():
                print(f"[{self.prefix}] {line.strip()}", flush=True)


def _report(emu: Emulator, arn: str) -> None:
    run = follow(emu.client("stepfunctions"), arn, say=_Lines(arn.rsplit(":", 1)[-1][:12]), timeout=3600)
    print(
        f"Execution {arn.rsplit(':', 1)[-1]} {run.status}"
        + (f": {run.error}: {_message(run.cause)}" if run.error else ""),
        flush=True,
    )
    if run.status != "SUCCEEDED":
        return
    for warning in (run.output.get("stack") or {}).get("warnings") or []:
        print(f"Warning: {warning}", flush=True)
    built = (run.output.get("builds") or {}).get("services") or []
    if built:
        kinds = [f"{b['name']} {'built' if b['built'] else 'reused'}" for b in built]
        print(f"Builds: {', '.join(kinds)}", flush=True)
    for service in (run.output.get("rollout") or {}).get("services") or []:
        print(
            f"Service {service['name']}: {service['running']}/{service['desired']} running "
            f"{service['image']}{' (updated)' if service['updated'] else ''}",
            flush=True,
        )
    for url in local_urls(emu):
        print(f"Application: {url}  (curl it)", flush=True)


def _message(cause: str | None) -> str:
    """A failed Lambda's message as it was written (a refused stack file lists a problem per line)."""
    try:
        found = json.loads(cause or "")
    except ValueError:
        return cause or ""
    return str(found.get("errorMessage") or cause) if isinstance(found, dict) else cause or ""


def local_urls(emu: Emulator) -> list[str]:
    """Where the application answers on this machine: each port of the load balancer's stand-in
    (real nodes); none with emulated nodes, which serve no traffic."""
    if emu.load_balancer is None:
        return []
    balancer = emu.load_balancer.balancer  # the real forwarder behind the emulated NLB
    urls = []
    for port in balancer.ports():
        host, bound = balancer.address(port)
        urls.append(f"http://{host}:{bound}/" + (f"  (the load balancer's port {port})" if port != bound else ""))
    return urls


def local_server(app, port: int):
    """Chalice's local dev server for `app` (what `chalice local` runs). create_local_server turns
    the app's class into a local one, which may happen once per process."""
    from chalice.config import Config
    from chalice.local import LocalChalice, LocalDevServer, create_local_server

    config = Config.create(chalice_stage="dev", app_name=app.app_name, lambda_timeout=60, lambda_memory_size=256)
    if isinstance(app, LocalChalice):
        return LocalDevServer(app, config, "127.0.0.1", port)
    return create_local_server(app, config, "127.0.0.1", port)


def run(
    port: int = 8000,
    aws_port: int = 5000,
    secret: str | None = None,
    nodes: int = 1,
    real_nodes: bool = False,
    repo: str | None = None,
) -> int:
    from slipway.cli import repository, shell_settings

    source = repository(repo)
    logging.getLogger("moto").setLevel(logging.CRITICAL)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    if real_nodes:
        from slipway import realnodes

        reason = realnodes.bake_available()
        if reason:
            print(f"slipway serve --real-nodes: {reason}", file=sys.stderr)
            return 2
    with Emulator(
        mode="server",
        aws_port=aws_port,
        webhook_secret=secret,
        node_count=nodes,
        real_nodes=real_nodes,
        repo=source,
        extra_environment=shell_settings(),
        log=lambda m: print(f"[real nodes] {m}", flush=True),
    ) as emu:
        server = local_server(emu.app.app, port)
        endpoint = f"http://127.0.0.1:{aws_port}"
        cli = f"aws --endpoint-url {endpoint} --region us-east-1"
        print(
            f"""Slipway on the embedded emulator
  webhook     POST http://127.0.0.1:{port}/github/webhook   (content type application/json)
  secret      {emu.webhook_secret}
  AWS API     {endpoint}  (region us-east-1, any credentials)
  repository  {emu.github.project_dir} (the local GitHub serves its commits at {emu.github.url})
  deploy      {emu.arns["deploy"]}
  teardown    {emu.arns["teardown"]}
Try:
  {cli} stepfunctions list-executions --state-machine-arn {emu.arns["deploy"]}
  {cli} lambda invoke --function-name {emu.function_name("prune_now")} --payload '{{}}' /dev/stdout
Ctrl-C stops everything.""",
            flush=True,
        )
        stop = threading.Event()
        threading.Thread(target=_watch, args=(emu, stop), daemon=True).start()
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            while thread.is_alive():
                time.sleep(0.5)
        except KeyboardInterrupt:
            print("\nstopping", flush=True)
        finally:
            stop.set()
            server.shutdown()
    return 0
