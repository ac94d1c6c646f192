"""What `chalice deploy --stage X` sees when it loads the app: each stage's own prune (and drift
check) schedule."""

import json
import subprocess
import sys

import pytest

from slipway import PROJECT_DIR

LOAD = """
import json, os
from chalice.cli.factory import CLIFactory
# As the chalice CLI builds it (chalice/cli/__init__.py): environ=os.environ.
app = CLIFactory('.', environ=os.environ).create_config_obj(chalice_stage_name='{stage}').chalice_app
print(json.dumps({{e.name: str(e.schedule_expression) for e in app.event_sources
                  if hasattr(e, 'schedule_expression')}}))
"""


@pytest.mark.parametrize("stage,expected", [("dev", "rate(1 day)"), ("prod", "cron(30 3 * * ? *)")])
def test_each_stage_deploys_its_own_prune_schedule(stage, expected):
    result = subprocess.run(
        [sys.executable, "-c", LOAD.format(stage=stage)], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    # The drift check's schedule is each stage's SLIPWAY_DRIFT_SCHEDULE, daily unless set.
    assert json.loads(result.stdout.splitlines()[-1]) == {"prune": expected, "drift_check": "rate(1 day)"}


def test_a_bad_schedule_stops_the_deploy():
    import os
    from unittest import mock

    from chalicelib.errors import ConfigurationError
    from chalicelib.settings import prune_schedule

    daily = {"SLIPWAY_PRUNE_SCHEDULE": "daily"}
    with mock.patch.dict(os.environ, daily), pytest.raises(ConfigurationError, match="rate"):
        prune_schedule()
