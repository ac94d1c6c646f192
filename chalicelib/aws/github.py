"""GitHub REST adapter (not AWS, but the same kind of thin edge): the tree ids of the folders
that shape the node image at a commit, and the commit's archive for the bake. Standard library only."""

from __future__ import annotations

import http.client
import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
from typing import BinaryIO

from chalicelib.errors import InvalidInput, TransientError

TIMEOUT_SECONDS = 10


def _get(api: str, repository: str, path: str, commit: str, token: str | None):
    """Open GET /repos/{repository}/{path}, mapping GitHub's answers to our errors."""
    url = f"{api.rstrip('/')}/repos/{urllib.parse.quote(repository)}/{path}"
    headers = {"Accept": "application/vnd.github+json", "User-Agent": "slipway",
               "X-GitHub-Api-Version": "2022-11-28"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_SECONDS)
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 409, 422):
            raise InvalidInput(f"GitHub has no commit {commit} in {repository} ({exc.code})") from exc
        if exc.code in (401, 403):
            raise InvalidInput(f"GitHub refused to read {repository} ({exc.code}): set the token "
                               "parameter for private repositories") from exc
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


def download_archive(api: str, repository: str, commit: str, into: BinaryIO,
                     token: str | None = None) -> int:
    """Write the zip of `repository` at `commit` (GET .../zipball/{commit}, redirects followed)
    into the file `into`, streaming; the number of bytes written."""
    try:
        with _get(api, repository, f"zipball/{commit}", commit, token) as response:
            shutil.copyfileobj(response, into, 1 << 20)
    except (OSError, http.client.HTTPException) as exc:
        raise TransientError(f"GitHub's archive of {commit} broke off: {exc}") from exc
    return into.tell()
