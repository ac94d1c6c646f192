"""GitHub's own REST description (vendored in tests/fixtures/github-rest/operations.json, made by
extract.py beside it), and the check of a request the local stand-in received against it: the
operation exists, its parameters are declared ones of the right type, its JSON body fits; an
answer of the deployments endpoints fits its response schema. Used by the adapter's tests
(tests/aws/test_github_rest_description.py) and the pipeline's (test_github_deployments.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).parent / "fixtures" / "github-rest" / "operations.json"
DESCRIPTION = json.loads(FIXTURE.read_text())


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        _, _, kind, name = node["$ref"].split("/")
        node = DESCRIPTION["components"][kind][name]
    return node


def schema_problems(schema: dict[str, Any], value: Any, where: str, *, strict: bool) -> list[str]:  # noqa: C901 - one branch per OpenAPI schema keyword
    """What in `value` does not fit the OpenAPI 3.0 `schema` (the subset GitHub's description
    uses). `strict` (a request): a property the schema does not declare is a problem too, unless
    it allows additional ones; an answer may carry more than its schema says."""
    schema = resolve(schema)
    if value is None:
        return [] if schema.get("nullable") else [f"{where}: null, not nullable"]
    if "oneOf" in schema:
        fits = [o for o in schema["oneOf"] if not schema_problems(o, value, where, strict=strict)]
        return [] if len(fits) == 1 else [f"{where}: fits {len(fits)} of oneOf's {len(schema['oneOf'])}"]
    if "anyOf" in schema:
        fits = [o for o in schema["anyOf"] if not schema_problems(o, value, where, strict=strict)]
        return [] if fits else [f"{where}: fits none of anyOf"]
    if "allOf" in schema:
        return [p for part in schema["allOf"] for p in schema_problems(part, value, where, strict=strict)]
    problems = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} is not one of {schema['enum']}")
    kind = schema.get("type")
    types = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list, "object": dict}
    if kind in types and (
        not isinstance(value, types[kind]) or (kind in ("integer", "number") and isinstance(value, bool))
    ):
        return [*problems, f"{where}: {type(value).__name__}, not {kind}"]
    if kind == "string":
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            problems.append(f"{where}: longer than {schema['maxLength']}")
    elif kind in ("integer", "number"):
        if value < schema.get("minimum", value) or value > schema.get("maximum", value):
            problems.append(f"{where}: {value} outside {schema.get('minimum')}..{schema.get('maximum')}")
    elif kind == "array":
        problems += [
            p for i, v in enumerate(value) for p in schema_problems(schema["items"], v, f"{where}[{i}]", strict=strict)
        ]
    elif kind == "object" or "properties" in schema:
        declared = schema.get("properties", {})
        problems += [f"{where}.{key}: required, missing" for key in schema.get("required", []) if key not in value]
        extra = schema.get("additionalProperties", False)
        for key, item in value.items():
            if key in declared:
                problems += schema_problems(declared[key], item, f"{where}.{key}", strict=strict)
            elif isinstance(extra, dict):
                problems += schema_problems(extra, item, f"{where}.{key}", strict=strict)
            elif strict and extra is not True:
                problems.append(f"{where}.{key}: not a property the description declares")
    return problems


def _template(path: str, parameters: list[dict[str, Any]]) -> re.Pattern[str]:
    """The path template as a pattern: a parameter is one segment, or several if x-multi-segment."""
    by_name = {p["name"]: p for p in parameters if p["in"] == "path"}

    def segment(match: re.Match[str]) -> str:
        multi = by_name[match.group(1)].get("x-multi-segment")
        return f"(?P<{match.group(1)}>{'.+' if multi else '[^/]+'})"

    return re.compile("^" + re.sub(r"\{(\w+)\}", segment, path) + "$")


def operation_of(method: str, path: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    """(template, operation, path parameters) of the one operation the request is."""
    found = []
    for template, methods in DESCRIPTION["operations"].items():
        operation = methods.get(method.lower())
        if operation is None:
            continue
        match = _template(template, [resolve(p) for p in operation.get("parameters", [])]).match(path)
        if match:
            found.append((template, operation, match.groupdict()))
    assert len(found) == 1, f"{method} {path} is {len(found)} operations of the description"
    return found[0]


def _parameter_value(schema: dict[str, Any], text: str) -> Any:
    """A path or query parameter's text as the JSON value its schema types it."""
    kind = resolve(schema).get("type")
    if kind == "integer":
        return int(text) if re.fullmatch(r"-?[0-9]+", text) else text
    if kind == "boolean":
        return {"true": True, "false": False}.get(text, text)
    return text


def request_problems(request: dict[str, Any]) -> tuple[str, list[str]]:
    """("METHOD template", what in the request the description does not allow)."""
    template, operation, in_path = operation_of(request["method"], request["path"])
    name = f"{request['method']} {template}"
    parameters = {(p["in"], p["name"]): p for p in map(resolve, operation.get("parameters", []))}
    problems = []
    for key, text in in_path.items():
        problems += schema_problems(
            parameters[("path", key)]["schema"],
            _parameter_value(parameters[("path", key)]["schema"], text),
            f"path {key}",
            strict=True,
        )
    for key, values in request["query"].items():
        declared = parameters.get(("query", key))
        if declared is None:
            problems.append(f"query {key}: not a parameter of {name}")
            continue
        if len(values) != 1:
            problems.append(f"query {key}: given {len(values)} times")
        problems += schema_problems(
            declared["schema"], _parameter_value(declared["schema"], values[0]), f"query {key}", strict=True
        )
    problems += [
        f"query {n}: required, missing"
        for (where, n), p in parameters.items()
        if where == "query" and p.get("required") and n not in request["query"]
    ]
    body = operation.get("requestBody")
    if body is None:
        if request["body"] is not None:
            problems.append(f"{name} takes no body")
        return name, problems
    if request["body"] is None:
        return name, [*problems, "body: missing"] if body.get("required") else problems
    content_type = request["headers"].get("Content-Type", "").split(";")[0]
    if content_type not in body["content"]:
        return name, [
            *problems,
            f"body: {content_type or 'no'} content type; the description has {list(body['content'])}",
        ]
    return name, problems + schema_problems(
        body["content"][content_type]["schema"], request["body"], "body", strict=True
    )


def answer_problems(request: dict[str, Any]) -> list[str]:
    """What in the stand-in's JSON answer does not fit the operation's response for its code."""
    _, operation, _ = operation_of(request["method"], request["path"])
    responses = operation["responses"]
    if str(request["status"]) not in responses:
        return [f"answer: {request['status']} is not a response of the operation ({list(responses)})"]
    content = resolve(responses[str(request["status"])]).get("content", {}).get("application/json")
    return schema_problems(content["schema"], request["answer"], "answer", strict=False) if content else []


def check(received: list[dict[str, Any]]) -> dict[str, list[str]]:
    """{"METHOD template": problems} over requests the stand-in received (for other tests too)."""
    found: dict[str, list[str]] = {}
    for request in received:
        name, problems = request_problems(request)
        if "/deployments" in request["path"] and "status" in request:
            problems += answer_problems(request)
        found.setdefault(name, []).extend(f"{request['method']} {request['path']}: {p}" for p in problems)
    return found
