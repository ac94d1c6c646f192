"""GitHub REST adapter (not AWS, but the same kind of thin edge): the tree ids of the folders
that shape the node image at a commit, the commit's archive for the bake, its stack file, and the commit status
that shows a deployment's progress on the commit. Standard library only."""

from __future__ import annotations

import http.client
import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPResponse
from typing import BinaryIO

from chalicelib.errors import GitHubRefused, InvalidInput, TransientError

TIMEOUT_SECONDS = 10
STATES = ("pending", "success", "failure", "error")
DESCRIPTION_LIMIT = 140  # GitHub refuses a longer status description


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


def set_status(
    api: str, repository: str, commit: str, token: str, *, state: str, description: str, target_url: str, context: str
) -> None:
    """POST /repos/{repository}/statuses/{commit}: the check mark (or cross) GitHub shows beside
    the commit. The token needs "Commit statuses: write" (classic: `repo:status`)."""
    if state not in STATES:
        raise ValueError(f"a commit status is one of {STATES}, not {state!r}")
    if len(description) > DESCRIPTION_LIMIT:
        description = description[: DESCRIPTION_LIMIT - 1] + "…"
    url = f"{api.rstrip('/')}/repos/{urllib.parse.quote(repository)}/statuses/{commit}"
    body = json.dumps(
        {"state": state, "description": description, "target_url": target_url, "context": context}
    ).encode()
    request = urllib.request.Request(
        url, data=body, method="POST", headers=_headers(token) | {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS):
            pass
    except urllib.error.HTTPError as exc:
        if _rate_limited(exc) or exc.code not in (400, 401, 403, 404, 422):
            raise TransientError(f"GitHub answered {exc.code} for {url}") from exc
        raise GitHubRefused(
            f"GitHub refused the commit status for {repository}@{commit[:12]} "
            f"({exc.code}): the token needs commit statuses write access"
        ) from exc
    except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets, TLS errors
        raise TransientError(f"GitHub unreachable: {exc}") from exc


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
