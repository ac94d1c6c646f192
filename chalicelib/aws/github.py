"""GitHub REST adapter (not AWS, but the same kind of thin edge): the tree ids of the folders
that shape the node image, at a commit. One request per deployment; standard library only."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from chalicelib.errors import InvalidInput, TransientError

TIMEOUT_SECONDS = 10


def top_level_trees(api: str, repository: str, commit: str, token: str | None = None) -> dict[str, str]:
    """{folder: tree id} for the top-level folders of `repository` at `commit`."""
    url = f"{api.rstrip('/')}/repos/{urllib.parse.quote(repository)}/git/trees/{commit}"
    headers = {"Accept": "application/vnd.github+json", "User-Agent": "slipway",
               "X-GitHub-Api-Version": "2022-11-28"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=TIMEOUT_SECONDS) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 409, 422):
            raise InvalidInput(f"GitHub has no commit {commit} in {repository} ({exc.code})") from exc
        if exc.code in (401, 403):
            raise InvalidInput(f"GitHub refused to read {repository} ({exc.code}): set the token "
                               "parameter for private repositories") from exc
        raise TransientError(f"GitHub answered {exc.code} for {url}") from exc
    except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as exc:
        raise TransientError(f"GitHub unreachable: {exc}") from exc
    return {entry["path"]: entry["sha"] for entry in body.get("tree", []) if entry.get("type") == "tree"}
