"""Reading what `docker system prune` printed: fixtures captured from a real Docker engine
(tests/fixtures/docker-prune/capture.sh says how)."""

from pathlib import Path

import pytest

from chalicelib import scripts
from chalicelib.aws.ssm import Invocation

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "docker-prune"


@pytest.mark.parametrize(
    "fixture,expected",
    [
        ("until-24h-fresh-objects.txt", 0),
        ("until-1s-dangling-image.txt", 503_700),
    ],
)
def test_reclaimed_space_is_read_from_real_docker_output(fixture, expected):
    assert scripts.reclaimed_bytes((FIXTURES / fixture).read_text()) == expected


@pytest.mark.parametrize(
    "line,expected",
    [
        ("Total reclaimed space: 1.5GB", 1_500_000_000),
        ("Total reclaimed space: 12MB", 12_000_000),
        ("Total reclaimed space: 999B", 999),
        ("Total reclaimed space: 2.048TB", 2_048_000_000_000),
    ],
)
def test_docker_decimal_units(line, expected):
    assert scripts.reclaimed_bytes(line) == expected


def test_missing_total_line_is_none():
    assert scripts.reclaimed_bytes("Cannot connect to the Docker daemon") is None


def test_results_name_each_failed_node_and_why():
    output = (FIXTURES / "until-1s-dangling-image.txt").read_text()
    results = scripts.prune_results(
        [
            Invocation("i-1", "Success", 0, output),
            Invocation("i-2", "Failed", 1, "Cannot connect to the Docker daemon at unix:///var/run/docker.sock."),
            Invocation("i-3", "Success", 0, "garbage"),
        ]
    )
    assert results[0] == scripts.NodePrune("i-1", "Success", 503_700, None)
    assert results[1].reclaimed_bytes is None and "Failed (exit 1): Cannot connect" in results[1].error
    assert results[2].error == "no 'Total reclaimed space' line in the output"


def test_prune_script_is_safe_by_default():
    marker = scripts.MARKERS["prune"]
    assert scripts.prune_script("until=24h") == [marker, "docker system prune --force --filter until=24h"]
    assert scripts.prune_script("until=48h", volumes=True) == [
        marker,
        "docker system prune --force --volumes --filter until=48h",
    ]
    assert "--all" not in " ".join(scripts.prune_script("until=24h", volumes=True))
