"""The webhook secrets through Powertools' cache, against moto: answers are kept for max_age,
"no previous secret" included; a failure to read is not kept."""

import pytest

from chalicelib import aws, secrets
from slipway.harness import CallRecorder
from tests.aws.conftest import Answer

NAME = "/slipway/dev/github-webhook-secret"


@pytest.fixture
def ssm(aws_env):
    aws.reset()
    secrets.reset()
    client = aws.client("ssm")  # the client the provider reads through
    yield client
    aws.reset()
    secrets.reset()


@pytest.fixture
def calls(ssm):
    recorder = CallRecorder()
    ssm.meta.events.register("provide-client-params.ssm.*", recorder)
    return recorder


def test_a_second_read_within_max_age_makes_no_ssm_call_even_without_a_previous_secret(ssm, calls):
    ssm.put_parameter(Name=NAME, Value="current", Type="SecureString")
    calls.calls.clear()
    assert secrets.webhook_secrets(NAME) == [b"current"]
    assert calls.calls == ["GetParameter", "GetParameter"]  # the secret, and its absent -previous
    calls.calls.clear()
    assert secrets.webhook_secrets(NAME) == [b"current"]
    assert calls.calls == []


def test_both_secrets_during_a_rotation_newest_first_and_cached(ssm, calls):
    ssm.put_parameter(Name=NAME, Value="new", Type="SecureString")
    ssm.put_parameter(Name=NAME + "-previous", Value="old", Type="SecureString")
    assert secrets.webhook_secrets(NAME) == [b"new", b"old"]
    calls.calls.clear()
    assert secrets.webhook_secrets(NAME) == [b"new", b"old"]
    assert calls.calls == []


def test_the_cache_lasts_max_age(ssm, calls, monkeypatch):
    monkeypatch.setattr(secrets, "CACHE_SECONDS", 0)  # Powertools keeps nothing for max_age 0
    ssm.put_parameter(Name=NAME, Value="one", Type="SecureString")
    assert secrets.webhook_secrets(NAME) == [b"one"]
    ssm.put_parameter(Name=NAME, Value="two", Type="SecureString", Overwrite=True)
    assert secrets.webhook_secrets(NAME) == [b"two"]
    assert calls.calls.count("GetParameter") == 4


def test_a_missing_secret_is_not_cached_the_next_call_reads_again(ssm, calls):
    with pytest.raises(secrets.SecretUnavailable, match=NAME):
        secrets.webhook_secrets(NAME)
    ssm.put_parameter(Name=NAME, Value="set-now", Type="SecureString")
    assert secrets.webhook_secrets(NAME) == [b"set-now"]


def test_a_failed_read_is_not_cached_the_next_call_reads_again(ssm, calls):
    ssm.put_parameter(Name=NAME, Value="current", Type="SecureString")
    # SSM refuses once (not a fault botocore retries), then answers again.
    refused = Answer(ssm, "GetParameter", "AccessDeniedException", times=1)
    with pytest.raises(secrets.SecretUnavailable, match=f"cannot read {NAME}"):
        secrets.webhook_secrets(NAME)
    assert refused.sent == 1
    assert secrets.webhook_secrets(NAME) == [b"current"]
    assert refused.sent == 3  # the secret and its -previous, read again


def test_reset_forgets_the_cached_answer(ssm, calls):
    ssm.put_parameter(Name=NAME, Value="one", Type="SecureString")
    assert secrets.webhook_secrets(NAME) == [b"one"]
    ssm.put_parameter(Name=NAME, Value="two", Type="SecureString", Overwrite=True)
    assert secrets.webhook_secrets(NAME) == [b"one"]  # cached
    secrets.reset()
    assert secrets.webhook_secrets(NAME) == [b"two"]
