"""Pure webhook rules: GitHub signature check, and a push event turned into a deploy request or a
reason to ignore it. No I/O here: the route feeds it headers, bytes and secrets.

Whatever a sender signs, the answer is a decision, never an exception: a body too deep to parse or a
field GitHub would never send is refused with a 400 that says which, and what reaches the execution
input has passed deploy_input's rules."""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import hmac
import json
import re
from dataclasses import dataclass

from chalicelib import deploy_input
from chalicelib.deploy_input import DeployInput
from chalicelib.errors import InvalidInput

SIGNATURE_HEADER = "x-hub-signature-256"
EVENT_HEADER = "x-github-event"
DELIVERY_HEADER = "x-github-delivery"
MAX_BODY_BYTES = 3 * 1024 * 1024
_SIGNATURE = re.compile(r"^sha256=([0-9a-f]{64})$")
_ZERO_SHA = "0" * 40


@dataclass(frozen=True)
class Rules:
    """Which pushes deploy: branch and tag globs, and the repositories allowed (empty: any)."""

    branches: tuple[str, ...] = ("main",)
    tags: tuple[str, ...] = ()
    repositories: tuple[str, ...] = ()
    workflow: str = ""  # deploy when this workflow succeeds (`workflow_run`), not on the push


@dataclass(frozen=True)
class DeployRequest:
    delivery_id: str
    repository: str
    ref: str
    before: str
    commit: str
    pusher: str
    run: str = ""  # the workflow run (id and attempt) that started it, for a `workflow_run`

    def execution_name(self) -> str:
        """One push, one name: GitHub's redeliveries and a second hook on the same repository
        carry the same (repository, ref, before, after) and so reach the same execution, while a
        later push of an old commit (a rollback) has another `before` and deploys again. A workflow
        run names its own: a re-run of the workflow deploys again, a redelivery does not."""
        parts = (self.repository, self.ref, self.before, self.commit) + ((self.run,) if self.run else ())
        identity = "\n".join(parts).encode()
        return f"{self.commit[:12]}-{hashlib.sha256(identity).hexdigest()[:40]}"

    def as_deploy_input(self) -> DeployInput:
        """The execution input, validated again as it is built (InvalidInput if a field is not)."""
        return DeployInput(self.repository, self.ref, self.commit, self.pusher, self.delivery_id)

    def execution_input(self) -> dict[str, str]:
        """Only what the pipeline needs, never the payload."""
        return self.as_deploy_input().as_execution_input()


@dataclass(frozen=True)
class Ignore:
    reason: str
    code: str = "event"  # metric dimension: event, deleted, ref


@dataclass(frozen=True)
class Pong:
    hook_id: int | None


@dataclass(frozen=True)
class Refuse:
    status: int
    reason: str


def signature_valid(secrets: list[bytes], body: bytes, header: str | None) -> bool:
    """True when `header` is `sha256=<hex>` of an HMAC-SHA256 of `body` under one of `secrets`.

    Compared in constant time as bytes; only sha256 is accepted, whatever the header claims.
    """
    if not header or not header.isascii():
        return False
    match = _SIGNATURE.match(header.strip())
    if not match:
        return False
    given = match.group(1).encode("ascii")
    valid = False
    for secret in secrets:
        expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode("ascii")
        # No short-circuit: every configured secret is compared, so timing says nothing.
        valid |= hmac.compare_digest(expected, given)
    return valid


def ref_deploys(ref: str, rules: Rules) -> bool:
    for prefix, patterns in (("refs/heads/", rules.branches), ("refs/tags/", rules.tags)):
        if ref.startswith(prefix):
            name = ref[len(prefix) :]
            return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
    return False


Decision = DeployRequest | Pong | Ignore | Refuse


def decide(event: str, delivery_id: str, body: bytes, rules: Rules) -> Decision:
    """What to do with a verified delivery: DeployRequest, Pong, Ignore or Refuse."""
    try:
        payload = json.loads(body)
    except RecursionError:
        # Arrays or objects nested deeper than the interpreter's recursion limit (about 1,000): the
        # C parser gives up cleanly; GitHub's payloads are a few levels deep.
        return Refuse(400, "body is nested too deeply to be a GitHub event")
    except (ValueError, UnicodeDecodeError):  # ValueError covers JSONDecodeError and 4,300+ digit ints
        return Refuse(400, "body is not JSON")
    if not isinstance(payload, dict):
        return Refuse(400, "body is not a JSON object")
    if event == "ping":
        hook_id = payload.get("hook_id")
        return Pong(hook_id if isinstance(hook_id, int) else None)
    if event == "workflow_run" and rules.workflow:
        return _decide_workflow_run(payload, delivery_id, rules)
    if event != "push":
        return Ignore(f"event '{event}' is not deployed", "event")
    if rules.workflow:
        return Ignore(f"pushes deploy when workflow '{rules.workflow}' succeeds (SLIPWAY_DEPLOY_WORKFLOW)", "event")
    return _decide_push(payload, delivery_id, rules)


def _decide_workflow_run(payload: dict[str, object], delivery_id: str, rules: Rules) -> Decision:
    """GitHub's `workflow_run` event: the named workflow completed successfully for a commit of a
    deploying branch deploys that commit, checked as a push's fields are."""
    run = payload.get("workflow_run")
    if not isinstance(run, dict):
        return Refuse(400, "workflow_run payload lacks workflow_run")
    if payload.get("action") != "completed":
        return Ignore(f"workflow run {payload.get('action')!s:.40}, not completed", "event")
    name = run.get("name")
    if name != rules.workflow:
        return Ignore(f"workflow '{name!s:.100}' is not '{rules.workflow}' (SLIPWAY_DEPLOY_WORKFLOW)", "event")
    if run.get("conclusion") != "success":
        return Ignore(f"workflow '{rules.workflow}' ended {run.get('conclusion')!s:.40}: nothing to deploy", "event")
    # Only a run for a push to the repository itself: a pull request's run (from a fork, whose
    # branch may well be called main) tests code nobody merged, and must never deploy it.
    if run.get("event") != "push":
        return Ignore(f"workflow run for a {run.get('event')!s:.40} event, not a push: nothing to deploy", "event")
    head = run.get("head_repository")
    base = payload.get("repository")
    head_name = head.get("full_name") if isinstance(head, dict) else None
    if not isinstance(base, dict) or head_name != base.get("full_name"):
        return Ignore(f"workflow run of commits from {head_name!s:.100}, not this repository", "event")
    branch = run.get("head_branch")
    if not isinstance(branch, str) or not branch:
        return Ignore("the workflow run has no branch (a tag or a fork's pull request): nothing to deploy", "ref")
    push = {
        "ref": f"refs/heads/{branch}",
        "after": run.get("head_sha"),
        "repository": payload.get("repository"),
        "pusher": {"name": (run.get("actor") or {}).get("login") if isinstance(run.get("actor"), dict) else None},
    }
    decision = _decide_push(push, delivery_id, rules)
    if isinstance(decision, DeployRequest):
        attempt = run.get("run_attempt")
        identity = f"{run.get('id')!s:.20}/{attempt if isinstance(attempt, int) else 1}"
        return dataclasses.replace(decision, run=identity)
    return decision


def _decide_push(payload: dict[str, object], delivery_id: str, rules: Rules) -> Decision:
    ref = payload.get("ref")
    after = payload.get("after")
    before = payload.get("before")
    repository = payload.get("repository")
    if not isinstance(ref, str) or not isinstance(after, str) or not isinstance(repository, dict):
        return Refuse(400, "push payload lacks ref, after or repository")
    full_name = repository.get("full_name")
    if not isinstance(full_name, str) or not full_name:
        return Refuse(400, "repository.full_name is missing")
    # Checked before anything echoes them (the 403 and the 'not deployed' answers do): a name or a
    # ref GitHub would never send is a forged or broken delivery, not one to ignore.
    problem = deploy_input.repository_problem(full_name)
    if problem:
        return Refuse(400, f"repository.full_name {problem}")
    problem = deploy_input.ref_problem(ref)
    if problem:
        return Refuse(400, f"ref {problem}")
    if rules.repositories and full_name not in rules.repositories:
        return Refuse(403, f"repository {full_name} is not allowed to deploy here")
    if payload.get("deleted") is True or after == _ZERO_SHA:
        return Ignore(f"{ref} was deleted", "deleted")
    if not ref_deploys(ref, rules):
        return Ignore(
            f"{ref} is not deployed (branches: {', '.join(rules.branches) or '-'}; "
            f"tags: {', '.join(rules.tags) or '-'})",
            "ref",
        )
    if not deploy_input.valid_commit(after):
        return Refuse(400, "'after' is not a commit id")
    # `before` names the execution (with repository, ref and after): it must be hashable as UTF-8.
    if before is not None and not (isinstance(before, str) and deploy_input.valid_commit(before)):
        return Refuse(400, "'before' is not a commit id")
    problem = deploy_input.delivery_id_problem(delivery_id)
    if problem:
        return Refuse(400, f"X-GitHub-Delivery {problem}")
    pusher = payload.get("pusher")
    pusher_name = pusher.get("name") if isinstance(pusher, dict) else None
    request = DeployRequest(
        delivery_id=delivery_id,
        repository=full_name,
        ref=ref,
        before=before if isinstance(before, str) else "",
        commit=after,
        # Shown, never decided on: cut to GitHub's longest name rather than refused.
        pusher=deploy_input.cut_pusher(pusher_name) if isinstance(pusher_name, str) else "",
    )
    try:
        request.as_deploy_input()
    except InvalidInput as exc:  # every field was checked above; this keeps it so if a check moves
        return Refuse(400, str(exc))
    return request
