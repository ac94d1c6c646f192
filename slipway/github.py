"""GitHub push deliveries as GitHub sends them: a documented push payload, signed headers."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid


def push_payload(
    *,
    repository: str = "example/app",
    ref: str = "refs/heads/main",
    before: str = "0" * 40,
    after: str,
    pusher: str = "octocat",
    deleted: bool = False,
    forced: bool = False,
) -> dict:
    """A push event shaped like GitHub's documented one (trimmed of URLs the pipeline ignores)."""
    owner, name = repository.split("/", 1)
    now = int(time.time())
    head = (
        None
        if deleted
        else {
            "id": after,
            "tree_id": hashlib.sha1(after.encode()).hexdigest(),
            "distinct": True,
            "message": "Deploy with Slipway",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "url": f"https://github.com/{repository}/commit/{after}",
            "author": {"name": "Mona Lisa Octocat", "email": "octocat@github.com", "username": pusher},
            "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
            "added": [],
            "removed": [],
            "modified": ["README.md"],
        }
    )
    return {
        "ref": ref,
        "before": before,
        "after": after,
        "repository": {
            "id": 1296269,
            "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5",
            "name": name,
            "full_name": repository,
            "private": False,
            "owner": {"name": owner, "login": owner, "id": 1, "type": "User"},
            "html_url": f"https://github.com/{repository}",
            "default_branch": "main",
            "pushed_at": now,
            "created_at": now - 86400,
        },
        "pusher": {"name": pusher, "email": f"{pusher}@github.com"},
        "sender": {"login": pusher, "id": 1, "type": "User"},
        "created": False,
        "deleted": deleted,
        "forced": forced,
        "base_ref": None,
        "compare": f"https://github.com/{repository}/compare/{before[:12]}...{after[:12]}",
        "commits": [head] if head else [],
        "head_commit": head,
    }


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def delivery_headers(secret: str, body: bytes, event: str = "push", delivery: str | None = None) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/slipway-emulator",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "42",
        "X-Hub-Signature-256": sign(secret, body),
    }


def encode(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def workflow_run_payload(
    *,
    repository: str = "example/app",
    workflow: str = "CI",
    branch: str | None = "main",
    head_sha: str,
    conclusion: str | None = "success",
    action: str = "completed",
    run_id: int = 30433642,
    attempt: int = 1,
    actor: str = "octocat",
    event: str = "push",
    head_repository: str | None = None,
) -> dict:
    """A workflow_run event as GitHub sends it (the fields Slipway reads, each checked against
    @octokit/webhooks-schemas in tests/unit/test_webhook.py; trimmed of the many it ignores)."""
    return {
        "action": action,
        "workflow": {"id": 161335, "name": workflow, "path": ".github/workflows/ci.yml", "state": "active"},
        "workflow_run": {
            "id": run_id,
            "name": workflow,
            "head_branch": branch,
            "head_sha": head_sha,
            "run_attempt": attempt,
            "event": event,
            "head_repository": {"full_name": head_repository or repository},
            "status": "completed" if action == "completed" else "in_progress",
            "conclusion": conclusion if action == "completed" else None,
            "actor": {"login": actor, "id": 1, "type": "User"},
        },
        "repository": {"full_name": repository, "name": repository.split("/", 1)[1]},
        "sender": {"login": actor, "id": 1, "type": "User"},
    }
