"""A local stand-in for the GitHub REST calls the pipeline makes, answered from this checkout:
the top-level trees of a commit (GET /repos/{owner}/{repo}/git/trees/{sha}), its archive
(GET /repos/{owner}/{repo}/zipball/{sha}: every file under one folder, as GitHub does), and
a file at a commit (GET /repos/{owner}/{repo}/contents/{path}?ref={sha}, raw),
commit statuses (POST /repos/{owner}/{repo}/statuses/{sha}: kept in `statuses`; a bearer token
equal to `token` is required, as GitHub requires one with write access), and deployments with
their statuses (POST and GET /repos/{owner}/{repo}/deployments and .../deployments/{id}/statuses:
kept in `deployments` and `deployment_statuses` as GitHub answers them; the same token required).
Every request is kept in `received` (method, path, query, headers, JSON body) for the tests that
hold them to GitHub's REST description.

- A commit this checkout has: its real tree ids (`git rev-parse <sha>:ansible`).
- A commit set in `trees` (tests use this to give two commits the same or other content).
- Any other commit (the demo's fictional ones, a tarball without .git): the working tree's
  ansible/ and packer/, hashed as git would hash them (`git hash-object`-style blobs and trees),
  so an uncommitted change to the role gives a new image key.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from slipway import PROJECT_DIR
from slipway.gittree import folders_zip, tree_objects

_TREES = re.compile(r"^/repos/[^/]+/[^/]+/git/trees/([0-9a-fA-F]{4,40})$")
_COMMITS = re.compile(r"^/repos/[^/]+/[^/]+/git/commits/([0-9a-fA-F]{4,40})$")
_ZIPBALL = re.compile(r"^/repos/([^/]+)/([^/]+)/zipball/([0-9a-fA-F]{4,40})$")
_CONTENTS = re.compile(r"^/repos/[^/]+/[^/]+/contents/(.+)$")
_STATUSES = re.compile(r"^/repos/([^/]+/[^/]+)/statuses/([0-9a-f]{40})$")
_DEPLOYMENTS = re.compile(r"^/repos/([^/]+/[^/]+)/deployments$")
_DEPLOYMENT_STATUSES = re.compile(r"^/repos/([^/]+/[^/]+)/deployments/([0-9]+)/statuses$")
STATUS_STATES = ("pending", "success", "failure", "error")
DEPLOYMENT_STATES = ("error", "failure", "inactive", "in_progress", "queued", "pending", "success")
# What the request bodies may carry (GitHub's REST description; other fields are refused here).
DEPLOYMENT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "ref": str,
    "task": str,
    "auto_merge": bool,
    "required_contexts": list,
    "payload": (dict, str),
    "environment": str,
    "description": (str, type(None)),
    "transient_environment": bool,
    "production_environment": bool,
}
DEPLOYMENT_STATUS_FIELDS: dict[str, type | tuple[type, ...]] = {
    "state": str,
    "target_url": str,
    "log_url": str,
    "description": str,
    "environment": str,
    "environment_url": str,
    "auto_inactive": bool,
}
HOST = "https://api.github.com"  # the urls in the answers, as GitHub's
FOLDERS = ("ansible", "packer")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _page(items: list[dict], query: dict[str, list[str]]) -> list[dict]:
    """One page of `items` as `per_page` (default 30, at most 100) and `page` (from 1) ask."""
    size = max(1, min(100, int((query.get("per_page") or ["30"])[0])))
    page = max(1, int((query.get("page") or ["1"])[0]))
    return items[(page - 1) * size : page * size]


class FakeGitHub:
    def __init__(self, project_dir: Path = PROJECT_DIR) -> None:
        self.project_dir = project_dir
        self.trees: dict[str, dict[str, str]] = {}
        self.executables: set[str] = set()  # blobs git keeps as 100755 (listed with that mode)
        self.missing: set[str] = set()  # commits to answer 404 for, as GitHub does for unknown ones
        self.slow: dict[str, float] = {}  # commits whose trees are answered after this many seconds
        self.files: dict[str, dict[str, bytes | None]] = {}  # commit -> path -> content (None: no such file)
        self.requests: list[str] = []
        self.token: str | None = None  # what POST .../statuses must present as its bearer token
        self.statuses: list[dict] = []  # {"repository", "sha", "state", "description", "target_url", "context"}
        self.status_answer: int | None = None  # answer statuses with this code instead (tests)
        self.status_headers: dict[str, str] = {}  # and these headers (a rate limit's, say)
        self.status_message = "as the test asked"  # and this message
        self.deployments: list[dict] = []  # each as GitHub answers it (a deployment's JSON)
        self.deployment_statuses: list[dict] = []  # each as GitHub answers it, oldest first
        self.deployment_answer: int | None = None  # answer the deployments endpoints with this code (202: merged)
        # Every request: {"method", "path", "query", "headers", "body"}, and "status", "answer" if JSON was answered.
        self.received: list[dict] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def deployment_states(self, deployment_id: int) -> list[str]:
        """The states of a deployment's statuses, oldest first."""
        return [
            s["state"]
            for s in self.deployment_statuses
            if s["deployment_url"].endswith(f"/deployments/{deployment_id}")
        ]

    def _creator(self) -> dict:
        login, base = "slipway-bot", f"{HOST}/users/slipway-bot"
        return {
            "login": login,
            "id": 1,
            "node_id": "MDQ6VXNlcjE=",
            "avatar_url": "https://avatars.githubusercontent.com/u/1?v=4",
            "gravatar_id": "",
            "url": base,
            "html_url": f"https://github.com/{login}",
            "followers_url": f"{base}/followers",
            "following_url": f"{base}/following{{/other_user}}",
            "gists_url": f"{base}/gists{{/gist_id}}",
            "starred_url": f"{base}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{base}/subscriptions",
            "organizations_url": f"{base}/orgs",
            "repos_url": f"{base}/repos",
            "events_url": f"{base}/events{{/privacy}}",
            "received_events_url": f"{base}/received_events",
            "type": "User",
            "site_admin": False,
        }

    def create_deployment(self, repository: str, body: dict) -> tuple[int, dict]:
        """POST /repos/{repository}/deployments: (code, answer), as GitHub does."""
        ref = body.get("ref")
        if not isinstance(ref, str) or not re.fullmatch(r"[0-9a-f]{40}", ref):
            return 422, {"message": f"No ref found for: {ref}"}  # the stand-in knows commits only
        environment = body.get("environment", "production")
        now = _now()
        with self._lock:
            number = next(self._ids)
            url = f"{HOST}/repos/{repository}/deployments/{number}"
            deployment = {
                "url": url,
                "id": number,
                "node_id": f"DE_{number}",
                "sha": ref,
                "ref": ref,
                "task": body.get("task", "deploy"),
                "payload": body.get("payload", {}),
                "original_environment": environment,
                "environment": environment,
                "description": body.get("description", ""),
                "creator": self._creator(),
                "created_at": now,
                "updated_at": now,
                "statuses_url": f"{url}/statuses",
                "repository_url": f"{HOST}/repos/{repository}",
                "transient_environment": body.get("transient_environment", False),
                "production_environment": body.get("production_environment", environment == "production"),
                "performed_via_github_app": None,
            }
            self.deployments.append(deployment)
        return 201, deployment

    def list_deployments(self, repository: str, query: dict[str, list[str]]) -> tuple[int, list[dict]]:
        """GET /repos/{repository}/deployments?sha&ref&task&environment&per_page&page, newest first."""
        wanted = {key: query[key][0] for key in ("sha", "ref", "task", "environment") if key in query}
        with self._lock:
            found = [
                d
                for d in reversed(self.deployments)
                if d["repository_url"] == f"{HOST}/repos/{repository}"
                and all(d.get(key) == value for key, value in wanted.items())
            ]
        return 200, _page(found, query)

    def add_deployment_status(self, repository: str, deployment_id: int, body: dict) -> tuple[int, dict]:
        """POST /repos/{repository}/deployments/{deployment_id}/statuses, with GitHub's
        `auto_inactive` (true unless said otherwise): a success makes inactive the earlier
        successful deployments of the environment, unless it is transient or a production one."""
        deployment = self._deployment(repository, deployment_id)
        if deployment is None:
            return 404, {"message": "Not Found"}
        if body.get("state") not in DEPLOYMENT_STATES or len(body.get("description") or "") > 140:
            return 422, {"message": "Validation Failed"}
        status = self._status(deployment, body)
        if (
            status["state"] == "success"
            and body.get("auto_inactive", True)
            and not deployment["transient_environment"]
            and not deployment["production_environment"]
        ):
            for earlier in self.deployments:
                if (
                    earlier["id"] < deployment["id"]
                    and earlier["repository_url"] == deployment["repository_url"]
                    and earlier["environment"] == status["environment"]
                    and self.deployment_states(earlier["id"])[-1:] == ["success"]
                ):
                    self._status(earlier, {"state": "inactive"})
        return 201, status

    def _status(self, deployment: dict, body: dict) -> dict:
        now = _now()
        with self._lock:
            number = next(self._ids)
            log_url = body.get("log_url", body.get("target_url", ""))
            status = {
                "url": f"{deployment['url']}/statuses/{number}",
                "id": number,
                "node_id": f"DES_{number}",
                "state": body["state"],
                "creator": self._creator(),
                "description": body.get("description", ""),
                "environment": body.get("environment", deployment["environment"]),
                "target_url": log_url,
                "created_at": now,
                "updated_at": now,
                "deployment_url": deployment["url"],
                "repository_url": deployment["repository_url"],
                "environment_url": body.get("environment_url", ""),
                "log_url": log_url,
                "performed_via_github_app": None,
            }
            self.deployment_statuses.append(status)
        return status

    def list_deployment_statuses(
        self, repository: str, deployment_id: int, query: dict[str, list[str]]
    ) -> tuple[int, list[dict] | dict]:
        """GET /repos/{repository}/deployments/{deployment_id}/statuses, newest first."""
        deployment = self._deployment(repository, deployment_id)
        if deployment is None:
            return 404, {"message": "Not Found"}
        with self._lock:
            found = [s for s in reversed(self.deployment_statuses) if s["deployment_url"] == deployment["url"]]
        return 200, _page(found, query)

    def _deployment(self, repository: str, deployment_id: int) -> dict | None:
        url = f"{HOST}/repos/{repository}/deployments/{deployment_id}"
        return next((d for d in self.deployments if d["url"] == url), None)

    def listing(self, sha: str) -> tuple[str, dict[str, tuple[str, str]]]:
        """GET .../git/trees/{sha}: the tree's id and {name: (type, id)}, for a commit or a tree:
        one set in `trees` (its folders), else this checkout's (`git ls-tree`), else the working
        tree's (the demo's made-up commits; a tree id of the working tree lists that tree)."""
        if sha in self.trees:
            return sha, {name: ("tree", tree) for name, tree in self.trees[sha].items()}
        listed = self._git("ls-tree", "-z", sha)
        if listed is not None:
            root = self._git("rev-parse", "--verify", "--quiet", f"{sha}^{{tree}}") or sha
            entries = {}
            for line in listed.split("\0"):
                if line:
                    meta, _, name = line.partition("\t")
                    mode, kind, object_id = meta.split()
                    entries[name] = (kind, object_id)
                    if mode == "100755":
                        self.executables.add(object_id)
            return root.strip(), entries
        root, objects = tree_objects(self.project_dir)
        return (sha, objects[sha]) if sha in objects else (root, objects[root])

    def root_tree(self, commit: str) -> str:
        """GET .../git/commits/{sha}'s `tree.sha`."""
        return self.listing(commit)[0]

    def resolve(self, commit: str) -> dict[str, str]:
        """The commit's top-level folders: {name: tree id}."""
        return {name: sha for name, (kind, sha) in self.listing(commit)[1].items() if kind == "tree"}

    def _git(self, *args: str) -> str | None:
        done = subprocess.run(["git", "-C", str(self.project_dir), *args], capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else None

    def file(self, commit: str, path: str) -> bytes | None:
        """A file at a commit: one set in `files`, else the commit's in this checkout, else the
        working tree's (the demo's fictional commits); None when there is none."""
        if path in self.files.get(commit, {}):
            return self.files[commit][path]
        if commit in self.trees or commit in self.files:
            return None
        shown = subprocess.run(
            ["git", "-C", str(self.project_dir), "show", f"{commit}:{path}"], capture_output=True, check=False
        )
        if shown.returncode == 0:
            return shown.stdout
        local = self.project_dir / path
        known = subprocess.run(
            ["git", "-C", str(self.project_dir), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True
        )
        return local.read_bytes() if known.returncode != 0 and local.is_file() else None

    def archive(self, owner: str, repo: str, commit: str) -> bytes:
        """The commit's zip if this checkout has it, else the working tree's files (only its image
        folders for a commit a test made up in `trees`)."""
        prefix = f"{owner}-{repo}-{commit[:7]}/"
        done = subprocess.run(
            [
                "git",
                "-C",
                str(self.project_dir),
                "archive",
                "--format=zip",
                f"--prefix={prefix}",
                f"{commit}^{{commit}}",
            ],
            capture_output=True,
        )
        if done.returncode == 0 and commit not in self.trees:
            return done.stdout
        return folders_zip(self.project_dir, FOLDERS if commit in self.trees else (".",), prefix)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        handler = type("Handler", (_Handler,), {"github": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        # shutdown() waits for the loop's next look at its flag: a twentieth of a second, not half.
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _Handler(BaseHTTPRequestHandler):
    """The HTTP side of a FakeGitHub: GitHub's REST paths the pipeline calls."""

    github: FakeGitHub  # set on the subclass each FakeGitHub serves with

    def do_GET(self) -> None:
        self.github.requests.append(self.path)
        self._receive(None)
        if self._deployments("GET", None):
            return
        zipball = _ZIPBALL.match(self.path.split("?")[0])
        if zipball and zipball.group(3) not in self.github.missing:
            data = self.github.archive(*zipball.groups())
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        contents = _CONTENTS.match(self.path.split("?")[0])
        if contents:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            ref = (query.get("ref") or [""])[0]
            found = (
                None if ref in self.github.missing else self.github.file(ref, urllib.parse.unquote(contents.group(1)))
            )
            if found is None:
                self._answer(404, {"message": "Not Found"})
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.github.raw+json")
            self.send_header("Content-Length", str(len(found)))
            self.end_headers()
            self.wfile.write(found)
            return
        commit = _COMMITS.match(self.path.split("?")[0])
        if commit and commit.group(1) not in self.github.missing:
            sha = commit.group(1)
            self._answer(200, {"sha": sha, "tree": {"sha": self.github.root_tree(sha), "url": ""}, "parents": []})
            return
        match = _TREES.match(self.path.split("?")[0])
        if not match:
            self._answer(404, {"message": "Not Found"})
            return
        time.sleep(self.github.slow.get(match.group(1), 0))
        if match.group(1) in self.github.missing:
            self._answer(404, {"message": "Not Found"})
            return
        _, entries = self.github.listing(match.group(1))
        self._answer(
            200,
            {
                # GitHub answers a commit's sha with the sha asked for (the root tree's is the
                # commit's `tree.sha`: GET .../git/commits/{sha}).
                "sha": match.group(1),
                "truncated": False,
                "tree": [
                    {"path": name, "mode": _mode(kind, sha in self.github.executables), "type": kind, "sha": sha}
                    for name, (kind, sha) in sorted(entries.items())
                ],
            },
        )

    def do_POST(self) -> None:
        self.github.requests.append("POST " + self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        self._receive(raw)
        if self._deployments("POST", raw):
            return
        match = _STATUSES.match(self.path.split("?")[0])
        if not match:
            self._answer(404, {"message": "Not Found"})
            return
        if not self.github.token or self.headers.get("Authorization") != f"Bearer {self.github.token}":
            self._answer(401, {"message": "Bad credentials"})
            return
        if self.github.status_answer:
            self._answer(self.github.status_answer, {"message": self.github.status_message}, self.github.status_headers)
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._answer(400, {"message": "Problems parsing JSON"})
            return
        if body.get("state") not in STATUS_STATES or len(body.get("description") or "") > 140:
            self._answer(422, {"message": "Validation Failed"})
            return
        status = {
            "repository": match.group(1),
            "sha": match.group(2),
            **{k: body.get(k) for k in ("state", "description", "target_url", "context")},
        }
        self.github.statuses.append(status)
        self._answer(201, status)

    def _receive(self, raw: bytes | None) -> None:
        split = urllib.parse.urlsplit(self.path)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        self._record = {
            "method": self.command,
            "path": split.path,
            "query": urllib.parse.parse_qs(split.query, keep_blank_values=True),
            "headers": dict(self.headers.items()),
            "body": body,
        }
        self.github.received.append(self._record)

    def _deployments(self, method: str, raw: bytes | None) -> bool:
        """Answer a deployments request (True), or leave the request to the others."""
        path = urllib.parse.urlsplit(self.path)
        listing, statuses = _DEPLOYMENTS.match(path.path), _DEPLOYMENT_STATUSES.match(path.path)
        if not listing and not statuses:
            return False
        if not self.github.token or self.headers.get("Authorization") != f"Bearer {self.github.token}":
            self._answer(401, {"message": "Bad credentials"})
            return True
        if self.github.deployment_answer == 202 and listing and method == "POST":
            self._answer(202, {"message": "Auto-merged main into topic-branch on deployment."})
            return True
        if self.github.deployment_answer:
            self._answer(
                self.github.deployment_answer, {"message": self.github.status_message}, self.github.status_headers
            )
            return True
        query = urllib.parse.parse_qs(path.query)
        if method == "GET" and listing:
            self._answer(*self.github.list_deployments(listing.group(1), query))
            return True
        if method == "GET" and statuses:
            self._answer(*self.github.list_deployment_statuses(statuses.group(1), int(statuses.group(2)), query))
            return True
        try:
            body = json.loads(raw or b"")
        except ValueError:
            self._answer(400, {"message": "Problems parsing JSON"})
            return True
        fields = DEPLOYMENT_FIELDS if listing else DEPLOYMENT_STATUS_FIELDS
        if not isinstance(body, dict) or any(
            key not in fields or not isinstance(value, fields[key]) for key, value in body.items()
        ):
            self._answer(422, {"message": "Validation Failed"})
            return True
        if listing:
            self._answer(*self.github.create_deployment(listing.group(1), body))
        elif statuses:
            self._answer(*self.github.add_deployment_status(statuses.group(1), int(statuses.group(2)), body))
        return True

    def _answer(self, status: int, body: dict | list, headers: dict[str, str] | None = None) -> None:
        if hasattr(self, "_record"):  # what was answered, JSON only: {"status", "answer"}
            self._record.update(status=status, answer=body)
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def _mode(kind: str, executable: bool) -> str:
    """A tree entry's `mode`, as GitHub gives it."""
    return "040000" if kind == "tree" else "100755" if executable else "100644"
