"""The webhook secret(s), read from SSM Parameter Store through Powertools Parameters, cached.

Rotation: `<name>` holds the current secret and `<name>-previous`, while set, the one before it;
deliveries signed with either are accepted. Both answers are cached for CACHE_SECONDS, including
"no previous secret", so a delivery costs no SSM call once warm. A failure to read (the current
secret missing or empty, SSM refusing or unreachable) is not cached: the next delivery tries again.

The caching is Powertools' own: `_SecretsProvider` is a Powertools parameter provider (a
BaseProvider, as its docs describe for a store of one's own) whose one value per parameter name
is that pair of answers, so `get(name, max_age=CACHE_SECONDS)` keeps it, and keeps nothing when
reading raised. Not SSMProvider's own `get` per name, which caches no answer for a parameter
that does not exist (a missing `-previous` would cost a GetParameter on every delivery), nor its
`get_parameters_by_name`, which does not cache missing names either and calls GetParameters,
which the webhook's role may not call (it has ssm:GetParameter on these two names only).
"""

from __future__ import annotations

import functools
from typing import Any

from aws_lambda_powertools.utilities.parameters.base import BaseProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

from chalicelib import aws
from chalicelib.aws import ssm

CACHE_SECONDS = 300
PREVIOUS_SUFFIX = "-previous"


class SecretUnavailable(Exception):
    """No webhook secret is configured, or it cannot be read."""


class _SecretsProvider(BaseProvider):
    """Powertools provider: for a parameter name, {"secrets": (current, previous if set)}."""

    def __init__(self, client: aws.Client) -> None:
        super().__init__(client=client)  # type: ignore[no-untyped-call]  # Powertools leaves it untyped
        self._ssm = client

    def _get(self, name: str, **sdk_options: Any) -> dict[str, Any]:
        current = ssm.get_secure(self._ssm, name)
        if not current:
            raise SecretUnavailable(f"{name} is not set or empty")
        previous = ssm.get_secure(self._ssm, name + PREVIOUS_SUFFIX)  # None: not in a rotation
        secrets = (current,) if not previous else (current, previous)
        return {"secrets": tuple(secret.encode() for secret in secrets)}

    def _get_multiple(self, path: str, **sdk_options: Any) -> dict[str, str]:
        raise NotImplementedError("webhook secrets are read by name, not by path")


@functools.cache
def _provider() -> _SecretsProvider:
    return _SecretsProvider(aws.client("ssm"))


def webhook_secrets(parameter: str) -> list[bytes]:
    """The accepted secrets, newest first. A failure to read is not cached: the next delivery tries again."""
    try:
        value = _provider().get(parameter, max_age=CACHE_SECONDS)
    except GetParameterError as exc:  # Powertools wraps whatever `_get` raised
        raise SecretUnavailable(f"cannot read {parameter}: {exc}") from exc
    if not isinstance(value, dict):  # what `_get` returns, cached or not
        raise SecretUnavailable(f"cannot read {parameter}: unexpected {type(value).__name__}")
    return list(value["secrets"])


def reset() -> None:
    """Forget the cached secrets and the provider's client (tests and the emulator switch them)."""
    _provider.cache_clear()
