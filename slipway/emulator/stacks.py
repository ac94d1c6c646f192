"""The stack on the emulated swarm: an emulated registry of images (each a digest, healthy or
not; any well-formed reference a public registry could serve is there, with a digest derived from
it, unless a test declares it missing; ECR's images only once a build pushed them), node labels
and placement, services created and updated by `docker stack deploy` (every service in the file
gets a new UpdatedAt, as swarmkit stamps every ServiceUpdate), an update that shows as under way
for one poll, a rollback when the new image is unhealthy, and secrets made from SSM. No Docker
engine runs."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import shlex

import yaml  # type: ignore[import-untyped]  # PyYAML ships no types and the venv has no stubs

from slipway.emulator.swarm import Image, Machine, Result, Service, Swarm, SwarmState, needs_line

_LABEL = re.compile(r"^docker node update --label-add (\S+) (\S+) >/dev/null$", re.MULTILINE)
_IMAGES = re.compile(r"^for image in(.*); do$", re.MULTILINE)
_STACK_NAMESPACE = re.compile(r"label=com\.docker\.stack\.namespace=(\S+)\); do$", re.MULTILINE)
_FETCH = re.compile(r'^slipway-node fetch (\S+) (\S+) "\$work/stack\.yml"$', re.MULTILINE)
_SECRET = re.compile(r"^slipway-node secret (\S+) (\S+)$", re.MULTILINE)
_CONFIG_FETCH = re.compile(r'^slipway-node fetch (\S+) (\S+) "\$work/"(\S+)$', re.MULTILINE)
_STACK_DEPLOY = re.compile(r'^docker stack deploy .*--compose-file "\$work/stack\.yml" (\S+)$', re.MULTILINE)
_SERVICE_RM = re.compile(r"^docker service rm (\S+) >/dev/null$", re.MULTILINE)
# A Docker reference's path and tag (docker/distribution's grammar: lower-case path components).
_PATH = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")


class StackAnswers(SwarmState):
    """The stack scripts' answers (stack-inspect, stack-deploy, stack-status) and the registry."""

    def push(self, reference: str, *, healthy: bool = True) -> str:
        """Put an image in the emulated registry under `repository:tag` (a new digest each time,
        as a rebuilt image has); returns the digest."""
        digest = "sha256:" + secrets.token_hex(32)
        self.registry[reference] = Image(digest, healthy)
        return digest

    def services(self, instance_id: str) -> dict[str, Service]:
        """The services of the swarm this node belongs to (what a test inspects)."""
        swarm = self._swarm_of(instance_id)
        return dict(swarm.services) if swarm else {}

    def _tick(self) -> str:
        self._clock += 1
        return (
            f"2026-12-01T00:00:{self._clock:02d}.000000000Z"
            if self._clock < 60
            else f"2026-12-01T00:{self._clock // 60:02d}:{self._clock % 60:02d}.000000000Z"
        )

    def _image(self, reference: str) -> Image | None:
        """The registry's image for a reference (`repo:tag`, or pinned `repo:tag@sha256:...`)."""
        name, _, digest = reference.partition("@")
        tagged = name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"
        if tagged not in self.registry and self._public(tagged):
            self.registry[tagged] = Image("sha256:" + hashlib.sha256(tagged.encode()).hexdigest(), True)
        image = self.registry.get(tagged)
        if digest:
            known = [
                i for ref, i in self.registry.items() if ref.split(":")[0] == name.split(":")[0] and i.digest == digest
            ]
            return known[0] if known else None
        return image

    def _public(self, reference: str) -> bool:
        """Whether a public registry would serve `reference` (`name:tag`): well-formed, not declared
        missing, and not in ECR (whose images are only those builds pushed) nor a private host's."""
        if reference in self.missing or reference.removesuffix(":latest") in self.missing:
            return False
        name, _, tag = reference.rpartition(":")
        first, _, rest = name.partition("/")
        # docker/distribution: the first component names a registry host when it has '.' or ':'
        # or is localhost; else the reference is Docker Hub's.
        host = first if rest and ("." in first or ":" in first or first == "localhost") else ""
        path = rest if host else name
        if not (_PATH.match(path) and _TAG.match(tag)):
            return False
        private = (
            host == "localhost" or host.startswith(("localhost:", "127.", "10.", "192.168.")) or ".dkr.ecr." in host
        )
        return not private

    def _eligible(self, swarm: Swarm, definition: dict, machines: dict[str, Machine]) -> list[str]:
        """The up, active members a service's placement constraints (`node.labels.x == y`) allow."""
        constraints = ((definition.get("deploy") or {}).get("placement") or {}).get("constraints") or []
        nodes = [i for i in swarm.roles if self._up(i, machines) and i not in swarm.drained]
        for constraint in constraints:
            key, _, value = (part.strip() for part in constraint.partition("=="))
            if key.startswith("node.labels."):
                label = key.removeprefix("node.labels.")
                nodes = [i for i in nodes if swarm.labels.get(i, {}).get(label) == value]
            elif key == "node.role":
                nodes = [i for i in nodes if swarm.roles.get(i) == value]
        return nodes

    def _service_lines(self, stack: str, swarm: Swarm, machines: dict[str, Machine]) -> list[str]:
        lines = []
        for service in sorted(swarm.services.values(), key=lambda s: s.name):
            if not service.name.startswith(stack + "_"):
                continue
            definition = service.definition
            deploy = definition.get("deploy") or {}
            replicated = (deploy.get("mode") or "replicated") == "replicated"
            replicas = int(deploy.get("replicas", 1)) if replicated else None
            labels = deploy.get("labels") or {}
            updating = service.settling > 0
            shown_state = "updating" if updating else service.update_state
            lines.append(
                "service "
                + json.dumps(
                    {
                        "name": service.name,
                        "spec": labels.get("slipway.spec", ""),
                        "image": definition["image"],
                        "updated_at": service.updated_at,
                        "update": {"State": shown_state, "Message": service.update_message} if shown_state else None,
                        "mode": {"Replicated": {"Replicas": replicas}} if replicated else {"Global": {}},
                    }
                )
            )
            if updating:
                service.settling -= 1
            eligible = self._eligible(swarm, definition, machines)
            image = self._image(definition["image"])
            healthy = bool(image and image.healthy)
            wanted = replicas if replicas is not None else len(eligible)
            running = wanted if (eligible and healthy and not updating) else 0
            shown = [definition["image"], (service.previous or definition)["image"]][updating]
            tasks = [
                {
                    "name": f"{service.name}.{n}",
                    "image": shown,
                    "desired": "Running",
                    "current": "Running 5 seconds ago",
                    "error": "",
                }
                for n in range(1, (wanted if updating and service.previous else running) + 1)
            ]
            if not updating and not running and wanted:
                why = (
                    "no suitable node (scheduling constraints not satisfied)"
                    if not eligible
                    else (
                        f"No such image: {definition['image']}" if image is None else "dockerexec: unhealthy container"
                    )
                )
                tasks.append(
                    {
                        "name": f"{service.name}.1",
                        "image": definition["image"],
                        "desired": "Running",
                        "current": "Pending" if not eligible else "Failed 2 seconds ago",
                        "error": why,
                    }
                )
            tasks += service.failed_tasks
            lines += ["task " + json.dumps(t) for t in tasks[:8]]
        return lines

    def _stack_inspect(self, instance_id: str, script: str) -> Result:
        managed = self._managed(instance_id)
        if isinstance(managed, Result):
            return managed
        swarm, machines = managed
        stack = needs_line(
            _STACK_NAMESPACE, script, "stack-inspect", "for id in $(docker service ls ... namespace=<stack>); do"
        )
        for label, host in _LABEL.findall(script):
            node = self._by_hostname(swarm, shlex.split(host)[0], machines)
            if node is None:
                return Result(1, stderr=f"Error response from daemon: node {host} not found")
            key, _, value = shlex.split(label)[0].partition("=")
            swarm.labels.setdefault(node, {})[key] = value
        out = self._service_lines(stack, swarm, machines)
        for reference in shlex.split(needs_line(_IMAGES, script, "stack-inspect", "for image in <images>; do")):
            image = self._image(reference)
            if image is None:
                out.append(
                    f"pull-failed {reference} Error response from daemon: manifest for {reference} not found: "
                    "manifest unknown: manifest unknown"
                )
            else:
                out.append(f"image {reference} {json.dumps([reference.rsplit(':', 1)[0] + '@' + image.digest])}")
        self.history.append((instance_id, f"stack inspect {stack}"))
        return Result(0, "".join(line + "\n" for line in out))

    def _stack_deploy(self, instance_id: str, script: str) -> Result:
        managed = self._managed(instance_id)
        if isinstance(managed, Result):
            return managed
        swarm, machines = managed
        needs_line(_FETCH, script, "stack-deploy", 'slipway-node fetch <bucket> <key> "$work/stack.yml"')
        fetched = _FETCH.search(script)
        assert fetched is not None  # needs_line has refused a script without it
        bucket, key = fetched.groups()
        try:
            document = yaml.safe_load(self._fetch(shlex.split(bucket)[0], shlex.split(key)[0]))
        except Exception as exc:  # noqa: BLE001  # what the node tool prints for any failed GetObject
            return Result(1, stderr=f"slipway-node: cannot fetch s3://{bucket}/{key}: {exc}")
        stack = shlex.split(needs_line(_STACK_DEPLOY, script, "stack-deploy", "docker stack deploy ... <stack>"))[0]
        refused = self._secrets(swarm, script) or self._configs(swarm, script, document)
        if refused is not None:
            return refused
        top_secrets = document.get("secrets") or {}
        out: list[str] = []
        for key_name, service_def in (document.get("services") or {}).items():
            for ref in service_def.get("secrets") or []:
                source = ref.get("source") if isinstance(ref, dict) else ref
                name = (top_secrets.get(source) or {}).get("name", f"{stack}_{source}")
                if name not in swarm.secrets:
                    return Result(
                        1,
                        "\n".join(out),
                        f"failed to create service {stack}_{key_name}: "
                        f"Error response from daemon: secret not found: {name}",
                    )
        for key_name, definition in (document.get("services") or {}).items():
            full = f"{stack}_{key_name}"
            service = swarm.services.get(full)
            now = self._tick()
            if service is None:
                swarm.services[full] = Service(full, definition, updated_at=now)
                out.append(f"Creating service {full}")
                continue
            out.append(f"Updating service {full} (id: {full})")
            service.version += 1
            service.updated_at = now  # swarmkit stamps every ServiceUpdate, changed or not
            if definition == service.definition:
                continue
            image = self._image(definition["image"])
            update = (definition.get("deploy") or {}).get("update_config") or {}
            service.previous, service.definition = service.definition, definition
            service.settling = 1
            if image is not None and image.healthy and self._eligible(swarm, definition, machines):
                service.update_state, service.update_message = "completed", "update completed"
                continue
            why = f"No such image: {definition['image']}" if image is None else "dockerexec: unhealthy container"
            service.failed_tasks.insert(
                0,
                {
                    "name": f"{full}.1",
                    "image": definition["image"],
                    "desired": "Shutdown",
                    "current": "Failed 3 seconds ago",
                    "error": f"task: non-zero exit (1): {why}" if image else why,
                },
            )
            if update.get("failure_action", "pause") == "rollback":
                service.definition, service.previous = service.previous, definition
                service.update_state, service.update_message = "rollback_completed", "rollback completed"
            else:
                service.update_state, service.update_message = (
                    "paused",
                    f"update paused due to failure or early termination of task {full}.1",
                )
        for name in _SERVICE_RM.findall(script):
            swarm.services.pop(shlex.split(name)[0], None)
            out.append(f"Removing service {name}")
        self.history.append((instance_id, f"docker stack deploy {stack}"))
        return Result(0, "".join(line + "\n" for line in out))

    def _secrets(self, swarm: Swarm, script: str) -> Result | None:
        """`slipway-node secret`: each swarm secret made from its parameter, unless it exists."""
        for name, parameter in _SECRET.findall(script):
            name, parameter = shlex.split(name)[0], shlex.split(parameter)[0]
            if name in swarm.secrets:
                continue
            value = self._parameter(parameter)
            if value is None:
                return Result(1, stderr=f"slipway-node: cannot read parameter {parameter}: ParameterNotFound")
            swarm.secrets[name] = value
        return None

    def _configs(self, swarm: Swarm, script: str, document: dict) -> Result | None:
        """The configs docker stack deploy creates from files beside the stack file (fetched by the
        script): each must be there; a config that exists keeps its bytes (Swarm's cannot change)."""
        fetched: dict[str, bytes] = {}
        for bucket, key, target in _CONFIG_FETCH.findall(script):
            try:
                fetched[shlex.split(target)[0]] = self._fetch(shlex.split(bucket)[0], shlex.split(key)[0])
            except Exception as exc:  # noqa: BLE001  # what the node tool prints for any failed GetObject
                return Result(1, stderr=f"slipway-node: cannot fetch s3://{bucket}/{key}: {exc}")
        for key, spec in (document.get("configs") or {}).items():
            if not isinstance(spec, dict) or spec.get("external") or "file" not in spec:
                continue
            name = spec.get("name") or key
            if spec["file"] not in fetched:
                return Result(1, stderr=f"open {spec['file']}: no such file or directory")
            if name in swarm.configs and swarm.configs[name] != fetched[spec["file"]]:
                return Result(1, stderr=f"failed to update config {name}: only updates to Labels are allowed")
            swarm.configs[name] = fetched[spec["file"]]
        return None

    def _stack_status(self, instance_id: str, script: str) -> Result:
        managed = self._managed(instance_id)
        if isinstance(managed, Result):
            return managed
        swarm, machines = managed
        stack = needs_line(
            _STACK_NAMESPACE, script, "stack-status", "for id in $(docker service ls ... namespace=<stack>); do"
        )
        self.history.append((instance_id, f"stack status {stack}"))
        return Result(0, "".join(line + "\n" for line in self._service_lines(stack, swarm, machines)))
