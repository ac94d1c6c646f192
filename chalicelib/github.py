"""GitHub REST adapter (not AWS, but the same kind of thin edge): the tree ids of the folders
that shape the node image at a commit, the commit's archive for the bake, its stack file, the commit status
that shows a deployment's progress on the commit, and the GitHub Deployment (with its deployment statuses)
that shows where the commit runs. Standard library only.

Every request this module can make is checked against GitHub's own REST description
(tests/aws/test_github_rest_description.py, tests/fixtures/github-rest/)."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.client import HTTPResponse
from typing import Any, BinaryIO

from chalicelib.errors import GitHubRefused, InvalidInput, TransientError

TIMEOUT_SECONDS = 10
STATES = ("pending", "success", "failure", "error")
DESCRIPTION_LIMIT = 140  # GitHub refuses a longer status description (commit and deployment statuses alike)
# A deployment status's states (POST .../deployments/{deployment_id}/statuses, `state`'s enum).
DEPLOYMENT_STATES = ("error", "failure", "inactive", "in_progress", "queued", "pending", "success")
# Environments end users reach: GitHub's default for `production_environment` is true only for
# "production"; Slipway's production stage is usually "prod", so both are said explicitly.
PRODUCTION_ENVIRONMENTS = ("prod", "production")
PAGE_SIZE = 30  # deployments per page when listing (GitHub's default; at most 100)
MAX_PAGES = 3  # listing stops there: the deployments looked at are the environment's newest 90
STATUS_PAGE_SIZE = 100  # one page of a deployment's statuses: Slipway sets two or three on each
MAX_EXAMINED = 10  # earlier deployments whose statuses are read when looking for the one replaced
REFUSED = (400, 401, 403, 404, 422)  # answers that retrying will not change (unless rate limits)
_COMMIT = re.compile(r"[0-9a-f]{40}")


def _headers(token: str | None) -> dict[str, str]:
    headers = {"Accept": "application/vnd.github+json", "User-Agent": "slipway", "X-GitHub-Api-Version": "2022-11-28"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _get(api: str, repository: str, path: str, commit: str, token: str | None) -> HTTPResponse:
    """Open GET /repos/{repository}/{path}, mapping GitHub's answers to our errors."""
    url = f"{api.rstrip('/')}/repos/{urllib.parse.quote(repository)}/{path}"
    try:
        response: HTTPResponse = urllib.request.urlopen(
            urllib.request.Request(url, headers=_headers(token)), timeout=TIMEOUT_SECONDS
        )
        return response
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 409, 422):
            raise InvalidInput(f"GitHub has no commit {commit} in {repository} ({exc.code})") from exc
        if exc.code in (401, 403):
            raise InvalidInput(
                f"GitHub refused to read {repository} ({exc.code}): set the token parameter for private repositories"
            ) from exc
        raise TransientError(f"GitHub answered {exc.code} for {url}") from exc
    except (urllib.error.URLError, TimeoutError) as exc:
        raise TransientError(f"GitHub unreachable: {exc}") from exc


def top_level_trees(api: str, repository: str, commit: str, token: str | None = None) -> dict[str, str]:
    """{folder: tree id} for the top-level folders of `repository` at `commit`."""
    try:
        with _get(api, repository, f"git/trees/{commit}", commit, token) as response:
            body = json.load(response)
    except (json.JSONDecodeError, OSError) as exc:
        raise TransientError(f"GitHub's answer for {commit} could not be read: {exc}") from exc
    return {entry["path"]: entry["sha"] for entry in body.get("tree", []) if entry.get("type") == "tree"}


def _tree(
    api: str, repository: str, sha: str, commit: str, token: str | None
) -> tuple[str, dict[str, tuple[str, str]]]:
    """GET .../git/trees/{sha} (a commit or a tree): the tree's own id and {name: (type, id)}."""
    try:
        with _get(api, repository, f"git/trees/{sha}", commit, token) as response:
            body = json.load(response)
    except (json.JSONDecodeError, OSError) as exc:
        raise TransientError(f"GitHub's answer for {commit} could not be read: {exc}") from exc
    entries = {e["path"]: (e.get("type", ""), e["sha"]) for e in body.get("tree", []) if "path" in e and "sha" in e}
    return str(body.get("sha") or sha), entries


def _root_tree(api: str, repository: str, commit: str, token: str | None) -> str:
    """The commit's root tree id (GET .../git/commits/{sha}: `tree.sha`; the trees endpoint given a
    commit may answer with the commit's own sha at its top)."""
    try:
        with _get(api, repository, f"git/commits/{commit}", commit, token) as response:
            return str(json.load(response)["tree"]["sha"])
    except (json.JSONDecodeError, KeyError, TypeError, OSError) as exc:
        raise TransientError(f"GitHub's answer for {commit} could not be read: {exc}") from exc


def path_ids(
    api: str, repository: str, commit: str, paths: Iterator[str] | list[str], token: str | None = None
) -> dict[str, str | None]:
    """{path: git object id at `commit`} for each repository path ("." is the root tree; None when
    the commit has no such path), walking the trees one folder at a time (each tree read once)."""
    top = _tree(api, repository, commit, commit, token)[1]
    listings: dict[str, dict[str, tuple[str, str]]] = {".": top}
    ids: dict[str, str | None] = {}
    for path in paths:
        if path in (".", ""):
            ids[path] = _root_tree(api, repository, commit, token)
            continue
        folder, found = ".", None
        parts = path.split("/")
        for depth, part in enumerate(parts):
            entry = listings[folder].get(part)
            if entry is None:
                found = None
                break
            kind, found = entry
            here = "/".join(parts[: depth + 1])
            if depth < len(parts) - 1:
                if kind != "tree":
                    found = None
                    break
                if here not in listings:
                    listings[here] = _tree(api, repository, found, commit, token)[1]
                folder = here
        ids[path] = found
    return ids


class CommitFiles:
    """The files of `repository` at `commit` through the REST API, as stack_sources.RepositoryFiles:
    each folder listed once (GET .../git/trees/{sha}), each file read when asked."""

    def __init__(self, api: str, repository: str, commit: str, token: str | None = None) -> None:
        self._api, self._repository, self._commit, self._token = api, repository, commit, token
        self._listings: dict[str, dict[str, tuple[str, str, str]]] = {}

    def _listing(self, folder: str, sha: str) -> dict[str, tuple[str, str, str]]:
        if folder not in self._listings:
            try:
                with _get(self._api, self._repository, f"git/trees/{sha}", self._commit, self._token) as response:
                    body = json.load(response)
            except (json.JSONDecodeError, OSError) as exc:
                raise TransientError(f"GitHub's answer for {self._commit} could not be read: {exc}") from exc
            self._listings[folder] = {
                e["path"]: (e.get("type", ""), e["sha"], str(e.get("mode", ""))) for e in body.get("tree", [])
            }
        return self._listings[folder]

    def kind(self, path: str) -> str | None:
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if not parts:
            return "dir"
        folder, sha = "", self._commit
        for part in parts[:-1]:
            entry = self._listing(folder, sha).get(part)
            if entry is None or entry[0] != "tree":
                return None
            folder, sha = f"{folder}/{part}", entry[1]
        entry = self._listing(folder, sha).get(parts[-1])
        if entry is None or entry[2] == "120000":  # a symbolic link: GitHub does not follow it
            return None
        if entry[0] == "tree":
            return "dir"
        return "executable" if entry[2] == "100755" else "file" if entry[0] == "blob" else None

    def read(self, path: str) -> bytes | None:
        return file_at(self._api, self._repository, self._commit, path, self._token)


def file_at(
    api: str, repository: str, commit: str, path: str, token: str | None = None, *, limit: int = 2 << 20
) -> bytes | None:
    """A file's bytes at `commit` (GET .../contents/{path}?ref={commit}, as raw), at most `limit`
    of them (a longer file is cut there: the caller refuses it); None if the commit has no such file."""
    url = (
        f"{api.rstrip('/')}/repos/{urllib.parse.quote(repository)}/contents/"
        f"{urllib.parse.quote(path)}?ref={urllib.parse.quote(commit)}"
    )
    headers = _headers(token) | {"Accept": "application/vnd.github.raw+json"}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_SECONDS) as response:
            data: bytes = response.read(limit)
            return data
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        if exc.code in (401, 403) and not _rate_limited(exc):
            raise InvalidInput(
                f"GitHub refused to read {path} of {repository} ({exc.code}): set the token parameter for private "
                "repositories"
            ) from exc
        raise TransientError(f"GitHub answered {exc.code} for {url}") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise TransientError(f"GitHub unreachable: {exc}") from exc


def download_archive(api: str, repository: str, commit: str, into: BinaryIO, token: str | None = None) -> int:
    """Write the zip of `repository` at `commit` (GET .../zipball/{commit}, redirects followed)
    into the file `into`, streaming; the number of bytes written."""
    try:
        with _get(api, repository, f"zipball/{commit}", commit, token) as response:
            shutil.copyfileobj(response, into, 1 << 20)
    except (OSError, http.client.HTTPException) as exc:
        raise TransientError(f"GitHub's archive of {commit} broke off: {exc}") from exc
    return into.tell()


def _short(description: str) -> str:
    return description if len(description) <= DESCRIPTION_LIMIT else description[: DESCRIPTION_LIMIT - 1] + "…"


def _request(
    method: str,
    url: str,
    token: str,
    body: dict[str, Any] | None = None,
    *,
    refusal: str,
    need: str,
    refused: tuple[int, ...] = REFUSED,
    read: bool = True,
) -> tuple[int, Any]:
    """Send one JSON request to GitHub with the token: (status, the answer's JSON, or None when
    it is empty or not `read`).
    A rate limit, an outage (5xx, anything unexpected) or a broken connection is a TransientError
    (the state machine retries it); an answer in `refused` is a GitHubRefused saying
    "`refusal` (code): `need`" (retrying will not change it)."""
    data = None if body is None else json.dumps(body).encode()
    headers = _headers(token) | ({"Content-Type": "application/json"} if data is not None else {})
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        if _rate_limited(exc) or exc.code not in refused:
            raise TransientError(f"GitHub answered {exc.code} for {url}") from exc
        raise GitHubRefused(f"{refusal} ({exc.code}): {need}") from exc
    except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets, TLS errors
        raise TransientError(f"GitHub unreachable: {exc}") from exc
    if not read or not raw.strip():
        return status, None
    try:
        return status, json.loads(raw)
    except ValueError as exc:
        raise TransientError(f"GitHub's answer for {url} could not be read: {exc}") from exc


def _repo_url(api: str, repository: str) -> str:
    return f"{api.rstrip('/')}/repos/{urllib.parse.quote(repository)}"


def set_status(
    api: str, repository: str, commit: str, token: str, *, state: str, description: str, target_url: str, context: str
) -> None:
    """POST /repos/{repository}/statuses/{commit}: the check mark (or cross) GitHub shows beside
    the commit. The token needs "Commit statuses: write" (classic: `repo:status`)."""
    if state not in STATES:
        raise ValueError(f"a commit status is one of {STATES}, not {state!r}")
    _request(
        "POST",
        f"{_repo_url(api, repository)}/statuses/{commit}",
        token,
        {"state": state, "description": _short(description), "target_url": target_url, "context": context},
        refusal=f"GitHub refused the commit status for {repository}@{commit[:12]}",
        need="the token needs commit statuses write access",
        read=False,  # any 2xx is the status set
    )


# --- deployments ---------------------------------------------------------------------------
# A GitHub Deployment per run shows on the repository's page which commit each environment runs,
# and where (environment_url). The token needs "Deployments: write" (classic: `repo_deployment`).

_DEPLOYMENTS_NEED = "the token needs deployments write access"


def create_deployment(
    api: str,
    repository: str,
    commit: str,
    token: str,
    *,
    environment: str,
    description: str,
    payload: dict[str, Any] | None = None,
) -> int | None:
    """POST /repos/{repository}/deployments for the 40-hex `commit`: the new deployment's id, or
    None when GitHub answered 202 (it merged the default branch into the ref instead of deploying
    it: the REST description's "merged branch response", which `auto_merge` false should rule
    out). `required_contexts` is empty so that other status checks on the commit (CI, or this
    deployment's own pending status) never make GitHub refuse the deployment."""
    if not _COMMIT.fullmatch(commit):
        raise ValueError(f"a deployment's ref is a commit's 40 hexadecimal digits, not {commit!r}")
    status, answer = _request(
        "POST",
        f"{_repo_url(api, repository)}/deployments",
        token,
        {
            "ref": commit,
            "auto_merge": False,
            "required_contexts": [],
            **({"payload": payload} if payload is not None else {}),
            "environment": environment,
            "description": description,
            "transient_environment": False,
            "production_environment": environment in PRODUCTION_ENVIRONMENTS,
        },
        refusal=f"GitHub refused a deployment of {repository}@{commit[:12]} to {environment}",
        need=_DEPLOYMENTS_NEED,
        refused=(*REFUSED, 409),  # 409: a merge conflict, or failed required contexts (none are asked)
    )
    if status == 202:
        return None
    if not isinstance(answer, dict) or not isinstance(answer.get("id"), int) or isinstance(answer["id"], bool):
        raise TransientError(f"GitHub's answer to a new deployment of {repository} has no id: {str(answer)[:200]}")
    deployment_id: int = answer["id"]
    return deployment_id


def set_deployment_status(
    api: str,
    repository: str,
    deployment_id: int,
    token: str,
    *,
    state: str,
    description: str,
    environment_url: str | None = None,
    log_url: str | None = None,
    auto_inactive: bool = False,
) -> None:
    """POST /repos/{repository}/deployments/{deployment_id}/statuses. `auto_inactive` is false by
    default: GitHub's own marks earlier deployments inactive only in non-production environments,
    so the caller does it for every environment (`previous_success`)."""
    if state not in DEPLOYMENT_STATES:
        raise ValueError(f"a deployment status is one of {DEPLOYMENT_STATES}, not {state!r}")
    body: dict[str, Any] = {"state": state, "description": _short(description), "auto_inactive": auto_inactive}
    if environment_url:
        body["environment_url"] = environment_url
    if log_url:
        body["log_url"] = log_url
    _request(
        "POST",
        f"{_repo_url(api, repository)}/deployments/{int(deployment_id)}/statuses",
        token,
        body,
        refusal=f"GitHub refused the {state} status of deployment {deployment_id} of {repository}",
        need=_DEPLOYMENTS_NEED,
    )


def deployments(
    api: str, repository: str, token: str, *, environment: str, sha: str | None = None, pages: int = MAX_PAGES
) -> Iterator[dict[str, Any]]:
    """GET /repos/{repository}/deployments?environment=...: the environment's deployments (of
    `sha` only, if given), as GitHub lists them (newest first), at most `pages` pages."""
    query = {"environment": environment, **({"sha": sha} if sha else {}), "per_page": str(PAGE_SIZE)}
    for page in range(1, pages + 1):
        url = f"{_repo_url(api, repository)}/deployments?{urllib.parse.urlencode({**query, 'page': str(page)})}"
        _, answer = _request(
            "GET", url, token, refusal=f"GitHub refused to list the deployments of {repository}", need=_DEPLOYMENTS_NEED
        )
        found = (
            [d for d in answer if isinstance(d, dict) and isinstance(d.get("id"), int)]
            if isinstance(answer, list)
            else []
        )
        yield from found
        if len(found) < PAGE_SIZE:
            return


def latest_state(api: str, repository: str, deployment_id: int, token: str) -> str | None:
    """The state of a deployment's newest status (GET .../deployments/{id}/statuses, one page:
    the highest id, whatever order GitHub lists them in), or None if it has none."""
    url = (
        f"{_repo_url(api, repository)}/deployments/{int(deployment_id)}/statuses"
        f"?{urllib.parse.urlencode({'per_page': str(STATUS_PAGE_SIZE), 'page': '1'})}"
    )
    _, answer = _request(
        "GET",
        url,
        token,
        refusal=f"GitHub refused to list the statuses of deployment {deployment_id} of {repository}",
        need=_DEPLOYMENTS_NEED,
    )
    statuses = (
        [s for s in answer if isinstance(s, dict) and isinstance(s.get("id"), int)] if isinstance(answer, list) else []
    )
    if not statuses:
        return None
    state = max(statuses, key=lambda s: int(s["id"])).get("state")
    return str(state) if state else None


def find_deployment(
    api: str, repository: str, token: str, *, environment: str, commit: str, payload: dict[str, Any]
) -> int | None:
    """The id of the deployment of `commit` to `environment` whose payload has every item of
    `payload` (a run's own: how a retried 'Prepare deployment' finds the one it created, and how
    a stopped run's report finds its run's), or None. One page: a commit has few deployments."""
    for deployment in deployments(api, repository, token, environment=environment, sha=commit, pages=1):
        carried = deployment.get("payload")
        if isinstance(carried, dict) and all(carried.get(k) == v for k, v in payload.items()):
            found: int = deployment["id"]
            return found
    return None


def previous_success(api: str, repository: str, token: str, *, environment: str, current: int) -> int | None:
    """The deployment of `environment` that `current` replaces: the newest other one whose newest
    status is `success` (failed, skipped and stopped ones are passed over; runs queued behind it
    are not `success` yet). Newest by id, not by push: two pushes close together may create their
    deployments in either order. Among the environment's newest MAX_PAGES pages, at most
    MAX_EXAMINED of them; None if none is."""
    others: list[int] = sorted(
        {int(d["id"]) for d in deployments(api, repository, token, environment=environment) if d["id"] != current},
        reverse=True,
    )
    for deployment_id in others[:MAX_EXAMINED]:
        if latest_state(api, repository, deployment_id, token) == "success":
            return deployment_id
    return None


def _rate_limited(exc: urllib.error.HTTPError) -> bool:
    """GitHub's primary and secondary rate limits answer 403 (or 429): worth waiting for."""
    if exc.code == 429:
        return True
    if exc.code != 403:
        return False
    headers = exc.headers
    if headers is not None and (headers.get("retry-after") or headers.get("x-ratelimit-remaining") == "0"):
        return True
    try:
        return b"rate limit" in (exc.read() or b"").lower()
    except (OSError, http.client.HTTPException):
        return False
