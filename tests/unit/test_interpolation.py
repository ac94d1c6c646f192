"""`${VAR}` and env files as docker compose reads them: compose-go's own test cases
(tests/fixtures/compose-go/, extracted from template/template_test.go and dotenv/*_test.go at the
commit its README names) run against chalicelib/interpolation.py and chalicelib/dotenv.py."""

import json
from pathlib import Path

import pytest

from chalicelib import dotenv, interpolation

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "compose-go"
TEMPLATES = json.loads((FIXTURES / "template_cases.json").read_text())
DOTENV = json.loads((FIXTURES / "dotenv_cases.json").read_text())


def _id(case: dict) -> str:
    return (case.get("test") or case.get("name") or "") + " " + repr(case.get("template", ""))[:40]


@pytest.mark.parametrize("case", TEMPLATES["cases"] + TEMPLATES["observed_cases"], ids=_id)
def test_templates_substitute_as_compose_go_does(case):
    # Given compose-go's case: a template, the variables, and what Substitute gives (or its error)
    environment = case.get("environment", TEMPLATES["environment"])
    result = interpolation.substitute(case["template"], environment.get)
    if "error" in case:
        # Then an error there is a problem here: a variable required and unset, or a $ starting nothing
        if case.get("error_type") == "MissingRequiredError":
            assert any(u.required for u in result.unset), result
        else:
            assert result.invalid or any(u.required for u in result.unset), result
    else:
        # Then the value is compose-go's (an unset variable is "" there and listed here)
        assert result.value == case["expected"]
        assert not result.invalid


def test_an_unset_variable_is_listed_with_the_templates_own_message():
    result = interpolation.substitute("${A:?set A first} ${B} ${C:-${D}}", {}.get)
    assert [(u.name, u.why, u.required) for u in result.unset] == [
        ("A", "set A first", True),
        ("B", None, False),
        ("D", None, False),
    ]


def _dotenv_id(case: dict) -> str:
    return str(case.get("name") or case.get("input", ""))[:60]


@pytest.mark.parametrize("case", DOTENV["cases"] + DOTENV["observed_cases"], ids=_dotenv_id)
def test_env_files_parse_as_compose_go_parses_them(case):
    lookup = case.get("lookup") or {}
    if case.get("error"):
        try:
            parsed = dotenv.parse(case["input"], lookup.get)
        except dotenv.DotenvError:
            return
        # compose-go fails on a required variable without a value; here that is listed
        assert any(parsed.unset.values()) or parsed.invalid, parsed
        return
    parsed = dotenv.parse(case["input"], lookup.get)
    assert parsed.values == case["expected"]


@pytest.mark.parametrize("case", DOTENV["multi_file_cases"], ids=_dotenv_id)
def test_env_files_read_in_order_later_ones_win(case):
    values: dict[str, str] = {}
    for text in case["inputs"]:
        values = dotenv.parse(text, (case["lookup"] or {}).get, values).values
    assert values == case["expected"]
