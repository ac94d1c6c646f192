"""A local stand-in for the GitHub REST calls the pipeline makes, answered from this checkout:
the top-level trees of a commit (GET /repos/{owner}/{repo}/git/trees/{sha}), its archive
(GET /repos/{owner}/{repo}/zipball/{sha}: every file under one folder, as GitHub does), and
a file at a commit (GET /repos/{owner}/{repo}/contents/{path}?ref={sha}, raw), and
commit statuses (POST /repos/{owner}/{repo}/statuses/{sha}: kept in `statuses`; a bearer token
equal to `token` is required, as GitHub requires one with write access).

- A commit this checkout has: its real tree ids (`git rev-parse <sha>:ansible`).
- A commit set in `trees` (tests use this to give two commits the same or other content).
- Any other commit (the demo's fictional ones, a tarball without .git): the working tree's
  ansible/ and packer/, hashed as git would hash them (`git hash-object`-style blobs and trees),
  so an uncommitted change to the role gives a new image key.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import threading
import time
import urllib.parse
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from slipway import PROJECT_DIR

_TREES = re.compile(r"^/repos/[^/]+/[^/]+/git/trees/([0-9a-fA-F]{4,40})$")
_ZIPBALL = re.compile(r"^/repos/([^/]+)/([^/]+)/zipball/([0-9a-fA-F]{4,40})$")
_CONTENTS = re.compile(r"^/repos/[^/]+/[^/]+/contents/(.+)$")
_STATUSES = re.compile(r"^/repos/([^/]+/[^/]+)/statuses/([0-9a-f]{40})$")
STATUS_STATES = ("pending", "success", "failure", "error")
FOLDERS = ("ansible", "packer")


def _git_object(kind: str, data: bytes) -> bytes:
    return hashlib.sha1(f"{kind} {len(data)}\0".encode() + data).digest()


def _files(folder: Path) -> list[Path]:
    """The files git would commit under `folder` (its ignore rules applied where it can tell)."""
    listed = subprocess.run(
        ["git", "-C", str(folder), "ls-files", "-z", "--cached", "--others", "--exclude-standard", "."],
        capture_output=True,
    )
    if listed.returncode == 0:
        return [folder / name for name in listed.stdout.decode().split("\0") if name and (folder / name).is_file()]
    return [p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts]


def working_tree_id(folder: Path) -> str:
    """The git tree id `folder` would have if committed as it is now."""
    files = _files(folder)

    def tree(path: Path) -> bytes:
        children = {}
        for f in files:
            try:
                rel = f.relative_to(path)
            except ValueError:
                continue
            name = rel.parts[0]
            children[name] = len(rel.parts) > 1
        entries = []
        for name in sorted(children, key=lambda n: n + ("/" if children[n] else "")):
            child = path / name
            if children[name]:
                entries.append(b"40000 " + name.encode() + b"\0" + tree(child))
            else:
                mode = b"100755" if child.stat().st_mode & 0o111 else b"100644"
                entries.append(mode + b" " + name.encode() + b"\0" + _git_object("blob", child.read_bytes()))
        return _git_object("tree", b"".join(entries))

    return tree(folder).hex()


class FakeGitHub:
    def __init__(self, project_dir: Path = PROJECT_DIR) -> None:
        self.project_dir = project_dir
        self.trees: dict[str, dict[str, str]] = {}
        self.missing: set[str] = set()  # commits to answer 404 for, as GitHub does for unknown ones
        self.slow: dict[str, float] = {}  # commits whose trees are answered after this many seconds
        self.files: dict[str, dict[str, bytes | None]] = {}  # commit -> path -> content (None: no such file)
        self.requests: list[str] = []
        self.token: str | None = None  # what POST .../statuses must present as its bearer token
        self.statuses: list[dict] = []  # {"repository", "sha", "state", "description", "target_url", "context"}
        self.status_answer: int | None = None  # answer statuses with this code instead (tests)
        self.status_headers: dict[str, str] = {}  # and these headers (a rate limit's, say)
        self.status_message = "as the test asked"  # and this message
        self._server: ThreadingHTTPServer | None = None

    def resolve(self, commit: str) -> dict[str, str]:
        if commit in self.trees:
            return self.trees[commit]
        found = {}
        for folder in FOLDERS:
            result = subprocess.run(
                [
                    "git",
                    "-C",
                    str(self.project_dir),
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    f"{commit}^{{commit}}:{folder}",
                ],
                capture_output=True,
                text=True,
            )
            if result.returncode == 0:
                found[folder] = result.stdout.strip()
        if len(found) == len(FOLDERS):
            return found
        return {folder: working_tree_id(self.project_dir / folder) for folder in FOLDERS}

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
        """The commit's zip if this checkout has it, else the working tree's image folders."""
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
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for folder in FOLDERS:
                for path in _files(self.project_dir / folder):
                    info = zipfile.ZipInfo(prefix + str(path.relative_to(self.project_dir)))
                    info.external_attr = (path.stat().st_mode & 0o777) << 16
                    archive.writestr(info, path.read_bytes())
        return buffer.getvalue()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        github = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                github.requests.append(self.path)
                zipball = _ZIPBALL.match(self.path.split("?")[0])
                if zipball and zipball.group(3) not in github.missing:
                    data = github.archive(*zipball.groups())
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
                    found = None if ref in github.missing else github.file(ref, urllib.parse.unquote(contents.group(1)))
                    if found is None:
                        self._answer(404, {"message": "Not Found"})
                        return
                    self.send_response(200)
                    self.send_header("Content-Type", "application/vnd.github.raw+json")
                    self.send_header("Content-Length", str(len(found)))
                    self.end_headers()
                    self.wfile.write(found)
                    return
                match = _TREES.match(self.path.split("?")[0])
                if not match:
                    self._answer(404, {"message": "Not Found"})
                    return
                time.sleep(github.slow.get(match.group(1), 0))
                if match.group(1) in github.missing:
                    self._answer(404, {"message": "Not Found"})
                    return
                trees = github.resolve(match.group(1))
                self._answer(
                    200,
                    {
                        "sha": match.group(1),
                        "truncated": False,
                        "tree": [
                            {"path": name, "mode": "040000", "type": "tree", "sha": sha}
                            for name, sha in sorted(trees.items())
                        ],
                    },
                )

            def do_POST(self) -> None:
                github.requests.append("POST " + self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                match = _STATUSES.match(self.path.split("?")[0])
                if not match:
                    self._answer(404, {"message": "Not Found"})
                    return
                if not github.token or self.headers.get("Authorization") != f"Bearer {github.token}":
                    self._answer(401, {"message": "Bad credentials"})
                    return
                if github.status_answer:
                    self._answer(github.status_answer, {"message": github.status_message}, github.status_headers)
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
                github.statuses.append(status)
                self._answer(201, status)

            def _answer(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
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

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
