#!/usr/bin/python3
"""`docker` in a real node container whose routing-mesh stand-in runs (slipway/realnodes/mesh.py): the rest of
the stand-in for Swarm's ingress mode, which this machine's kernel cannot give (no IPVS).

slipway.realnodes installs it as /usr/local/bin/docker (before /usr/bin on the PATH) with the mesh's
ports in /run/slipway-mesh/ports ("<published>:<task port>" per line). Every command goes to the
real /usr/bin/docker unchanged, except `docker stack deploy --compose-file F`, whose file it rewrites
first: a port a service publishes in ingress mode (the default) on a mesh port P becomes the same
target published in host mode on P's task port, where the node's mesh finds it; the service resolves
by DNS round robin (`endpoint_mode: dnsrr`: a VIP needs IPVS too), and its updates stop a task before
starting the next (`order: stop-first`: a task port is held on its node, which ingress mode would
not do). So the stack file Slipway validates and deploys is the user's own, ingress ports included.

Runs on the node's python3 (Debian 12); PyYAML comes from /run/slipway-mesh (copied in with it).
"""

from __future__ import annotations

import os
import sys

MESH_DIR = "/run/slipway-mesh"
REAL_DOCKER = "/usr/bin/docker"


def mesh_ports(path: str = f"{MESH_DIR}/ports") -> dict[int, int]:
    ports: dict[int, int] = {}
    try:
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                published, _, task = line.strip().partition(":")
                if published.isdigit() and task.isdigit():
                    ports[int(published)] = int(task)
    except FileNotFoundError:
        pass
    return ports


def _port(entry: object) -> tuple[int | None, int | None, str, str]:
    """(published, target, protocol, mode) of a ports entry, short or long syntax."""
    if isinstance(entry, dict):
        published = entry.get("published")
        return (
            int(published) if published not in (None, "") and str(published).isdigit() else None,
            int(entry["target"]) if str(entry.get("target", "")).isdigit() else None,
            str(entry.get("protocol") or "tcp"),
            str(entry.get("mode") or "ingress"),
        )
    spec, _, protocol = str(entry).partition("/")
    parts = spec.rsplit(":", 2)
    if len(parts) < 2 or not (parts[-2].isdigit() and parts[-1].isdigit()):
        return None, None, protocol or "tcp", "ingress"
    return int(parts[-2]), int(parts[-1]), protocol or "tcp", "ingress"


def rewrite(document: dict, mesh: dict[int, int]) -> dict:
    """The stack with its ingress ports on mesh ports moved to their task ports, in host mode."""
    for service in (document.get("services") or {}).values():
        if not isinstance(service, dict):
            continue
        moved = False
        ports = []
        for entry in service.get("ports") or []:
            published, target, protocol, mode = _port(entry)
            if mode != "host" and published in mesh and target is not None and protocol == "tcp":
                ports.append({"target": target, "published": mesh[published], "protocol": "tcp", "mode": "host"})
                moved = True
            else:
                ports.append(entry)
        if service.get("ports"):
            service["ports"] = ports
        deploy = service.setdefault("deploy", {})
        deploy.setdefault("endpoint_mode", "dnsrr")
        if moved:
            for key in ("update_config", "rollback_config"):
                deploy.setdefault(key, {})["order"] = "stop-first"
    return document


def _rewrite_file(path: str, mesh: dict[int, int]) -> None:
    sys.path.insert(0, MESH_DIR)
    import yaml  # type: ignore[import-untyped]  # only a stack deploy needs it, from MESH_DIR; no stubs

    with open(path, encoding="utf-8") as source:
        document = yaml.safe_load(source)
    if isinstance(document, dict):
        with open(path, "w", encoding="utf-8") as target:
            yaml.safe_dump(rewrite(document, mesh), target, sort_keys=False)


def main(argv: list[str]) -> None:
    args = argv[1:]
    if args[:2] == ["stack", "deploy"]:
        mesh = mesh_ports()
        for i, arg in enumerate(args):
            if arg in ("-c", "--compose-file") and i + 1 < len(args):
                _rewrite_file(args[i + 1], mesh)
            elif arg.startswith("--compose-file="):
                _rewrite_file(arg.split("=", 1)[1], mesh)
    os.execv(REAL_DOCKER, ["docker", *args])


if __name__ == "__main__":
    main(sys.argv)
