"""What a deploy execution may be started with: five bounded, validated strings, whoever starts it.

The webhook builds its execution input here, and the state machine's first step parses it back here,
so a push and a run started by hand from the console pass the same rules. Pure: no I/O.

Each field stays far below Step Functions' 256 KiB execution input (262144 bytes of UTF-8:
https://docs.aws.amazon.com/step-functions/latest/dg/service-quotas.html), and holds only what GitHub
itself could have sent, so nothing later in the pipeline (a GitHub API path, a tag, a log line) ever
sees a value GitHub would not allow.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

from chalicelib.errors import InvalidInput

# Owners (users and organizations): at most 39 ASCII alphanumerics or hyphens, not starting with a
# hyphen and no two in a row (https://github.com/dead-claudia/github-limits, Usernames and
# Organization names, each verified against GitHub's own validation messages), and not ending with
# one, as issue 16 has it (the rule usually quoted from GitHub's sign-up form; the list does not say).
MAX_OWNER = 39
_OWNER = re.compile(r"[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*")
# Repository names: at most 100 ASCII letters, digits, '.', '-' or '_' (GitHub: "Name cannot be more
# than 100 characters"), and never "." or "..": https://github.com/github/docs/issues/44518 (proposed
# for https://docs.github.com/en/repositories/creating-and-managing-repositories/repository-limits in
# github/docs#44805) and https://github.com/dead-claudia/github-limits (Repository names).
MAX_REPOSITORY_NAME = 100
_REPOSITORY_NAME = re.compile(r"[A-Za-z0-9._-]+")
# A branch or tag name of up to 255 bytes under refs/heads/ (the longer prefix). Git sets no length
# of its own; GitHub refuses branch names past 244-250 bytes (measured, not documented:
# https://stackoverflow.com/questions/24014361/max-length-of-git-branch-name), and 255 bytes is the
# longest file name most file systems hold, a loose ref being a file.
DEPLOYABLE_REF_PREFIXES = ("refs/heads/", "refs/tags/")
MAX_REF_BYTES = len("refs/heads/") + 255
# git-check-ref-format(1), https://git-scm.com/docs/git-check-ref-format (read in the copy at
# https://www.kernel.org/doc/man-pages/online/pages/man1/git-check-ref-format.1.html): this pattern is
# rules 3-6, 8 and 10, no control character, space, '~', '^', ':', '?', '*', '[' or '\', and no "..",
# "@{" or "//"; ref_problem checks rules 1 and 7 (and 2, 6 and 9 by asking for "refs/"). The C1
# controls (U+0080-U+009F), which git would let through as bytes, are refused too: no real branch has one.
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f-\x9f~^:?*\[\\]|\.\.|@\{|//")
_COMMIT = re.compile(r"[0-9a-f]{40}")
# GitHub's push `pusher.name` is a login (39 characters) or, for a git identity, a name; a profile
# name is at most 255 characters (https://github.com/dead-claudia/github-limits, Profile names).
# It is only shown, never used to decide, so a longer one is cut rather than refused.
MAX_PUSHER = 255
_NOT_IN_A_NAME = ("Cc", "Cs", "Zl", "Zp")
# X-GitHub-Delivery is a GUID identifying the event (https://docs.github.com/en/webhooks/
# webhook-events-and-payloads#delivery-headers; https://github.com/github/docs/issues/32822): 36
# characters of hex and hyphens. Any id of letters, digits and hyphens up to 64 is taken, so that tools
# and tests may name their deliveries.
MAX_DELIVERY_ID = 64
_DELIVERY_ID = re.compile(r"[A-Za-z0-9-]+")

FIELDS = ("repository", "ref", "commit", "pusher", "delivery_id", "trigger")
# What started a run: a push (the webhook, or a person in the console: left out), or a heal (a node
# died between pushes, or the drift check found one missing: steps/heal.py).
TRIGGERS = ("", "push", "heal")
_SHOWN = 60


def _shown(value: str) -> str:
    """A value as quoted in a message: cut, so that an error never carries a whole hostile field."""
    return repr(value if len(value) <= _SHOWN else value[:_SHOWN] + "...")


def repository_problem(name: str) -> str | None:
    """Why `name` is not an 'owner/name' GitHub could have, or None when it is one."""
    owner, slash, repository = name.partition("/")
    if not slash:
        return f"must be 'owner/name', got {_shown(name)}"
    if len(owner) > MAX_OWNER or not _OWNER.fullmatch(owner):
        return (
            f"owner must be 1-{MAX_OWNER} letters, digits or single hyphens, not starting or ending "
            f"with a hyphen, got {_shown(owner)}"
        )
    if len(repository) > MAX_REPOSITORY_NAME or not _REPOSITORY_NAME.fullmatch(repository) or repository in (".", ".."):
        return (
            f"name must be 1-{MAX_REPOSITORY_NAME} letters, digits, '.', '-' or '_', and not '.' "
            f"or '..', got {_shown(repository)}"
        )
    return None


def ref_problem(ref: str) -> str | None:
    """Why `ref` is not a well-formed git ref under refs/ (git check-ref-format's rules, and at most
    MAX_REF_BYTES), or None. Any namespace passes: whether it deploys is the caller's question."""
    try:
        size = len(ref.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate, which JSON's \ud800 can carry
        return "is not valid Unicode"
    if size > MAX_REF_BYTES:
        return f"is longer than {MAX_REF_BYTES} bytes"
    if not ref.startswith("refs/"):
        return f"must start with refs/, got {_shown(ref)}"
    if _REF_FORBIDDEN.search(ref):
        return (
            f"has a character or sequence git refuses in a ref (control, space, ~ ^ : ? * [ \\, "
            f"'..', '@{{' or '//'), got {_shown(ref)}"
        )
    if ref.endswith(("/", ".")):
        return f"must not end with '/' or '.', got {_shown(ref)}"
    for part in ref.split("/"):
        if part.startswith(".") or part.endswith(".lock"):
            return f"has a component starting with '.' or ending with '.lock', got {_shown(ref)}"
    return None


def deployable_ref_problem(ref: str) -> str | None:
    """ref_problem, and the ref must name a branch or a tag: nothing else is ever deployed."""
    problem = ref_problem(ref)
    if problem:
        return problem
    if not ref.startswith(DEPLOYABLE_REF_PREFIXES):
        return f"must be a branch (refs/heads/...) or a tag (refs/tags/...), got {_shown(ref)}"
    return None


def commit_problem(commit: str) -> str | None:
    if not _COMMIT.fullmatch(commit):
        return f"must be 40 lower-case hex characters (a full commit id), got {_shown(commit)}"
    return None


def delivery_id_problem(delivery_id: str) -> str | None:
    if len(delivery_id) > MAX_DELIVERY_ID or not _DELIVERY_ID.fullmatch(delivery_id):
        return f"must be a GUID: 1-{MAX_DELIVERY_ID} letters, digits or hyphens, got {_shown(delivery_id)}"
    return None


def valid_repository(name: str) -> bool:
    return repository_problem(name) is None


def valid_ref(ref: str) -> bool:
    return ref_problem(ref) is None


def valid_commit(commit: str) -> bool:
    return commit_problem(commit) is None


def valid_delivery_id(delivery_id: str) -> bool:
    return delivery_id_problem(delivery_id) is None


def cut_pusher(name: str) -> str:
    """A pusher name fit to show and to log: without control characters, line or paragraph separators
    and lone surrogates (none is in a name GitHub shows), and cut to MAX_PUSHER characters."""
    kept = "".join(c for c in name[: 4 * MAX_PUSHER] if unicodedata.category(c) not in _NOT_IN_A_NAME)
    return kept[:MAX_PUSHER].strip()


@dataclass(frozen=True)
class DeployInput:
    """A deploy execution's input. Valid by construction: an instance that exists passed the rules."""

    repository: str
    ref: str
    commit: str
    pusher: str = ""
    delivery_id: str = ""
    trigger: str = ""

    def __post_init__(self) -> None:
        problems = {
            "repository": repository_problem(self.repository),
            "ref": deployable_ref_problem(self.ref) if self.ref else None,
            "commit": commit_problem(self.commit),
            "pusher": None
            if cut_pusher(self.pusher) == self.pusher
            else f"must be at most {MAX_PUSHER} characters, without control characters (see cut_pusher)",
            "delivery_id": delivery_id_problem(self.delivery_id) if self.delivery_id else None,
            "trigger": None if self.trigger in TRIGGERS else f"must be push or heal, got {_shown(self.trigger)}",
        }
        for name, problem in problems.items():
            if problem:
                raise InvalidInput(f"execution input '{name}' {problem}")

    def as_execution_input(self) -> dict[str, str]:
        """Only what the pipeline needs, never the payload."""
        return {
            "repository": self.repository,
            "ref": self.ref,
            "commit": self.commit,
            "pusher": self.pusher,
            "delivery_id": self.delivery_id,
            **({"trigger": self.trigger} if self.trigger else {}),
        }


def _text(raw: Mapping[object, object], name: str, required: bool) -> str:
    value = raw.get(name)
    if value is None:
        if required:
            raise InvalidInput(f"execution input needs '{name}'")
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"execution input '{name}' must be a string, got {type(value).__name__}")
    if required and not value:
        raise InvalidInput(f"execution input '{name}' must not be empty")
    return value


def parse(raw: object) -> DeployInput:
    """The DeployInput of an execution input as someone starting the state machine would give it:
    `repository` (owner/name) and `commit` (a full commit id; upper-case hex is taken) are required;
    `ref`, `pusher`, `delivery_id` and `trigger` ("heal" for a heal) may be left out. Any other field
    is refused, so that a misspelt one is not silently dropped. An overlong pusher is cut; anything
    else wrong raises InvalidInput naming the field and the problem."""
    if not isinstance(raw, Mapping):
        raise InvalidInput(
            f"execution input must be a JSON object with at least 'repository' and 'commit', got {type(raw).__name__}"
        )
    unknown = sorted(str(key) for key in raw if key not in FIELDS)
    if unknown:
        raise InvalidInput(
            f"execution input has unknown field(s) {', '.join(_shown(k) for k in unknown[:5])}; "
            f"expected {', '.join(FIELDS)}"
        )
    return DeployInput(
        repository=_text(raw, "repository", required=True),
        ref=_text(raw, "ref", required=False),
        commit=_text(raw, "commit", required=True).lower(),
        pusher=cut_pusher(_text(raw, "pusher", required=False)),
        delivery_id=_text(raw, "delivery_id", required=False),
        trigger=_text(raw, "trigger", required=False),
    )
