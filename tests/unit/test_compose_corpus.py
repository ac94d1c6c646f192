"""Public Compose files as their authors wrote them (tests/fixtures/compose-corpus/, with the files of
their repository they read): each is accepted or refused as expected, an accepted one never carries
to the manager what docker stack deploy would refuse there for a reason Slipway could have known,
and `slipway check` (the working tree) agrees with the pipeline's reading (the commit, through the
GitHub REST API) on every one."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from chalicelib import github, stack
from slipway.cli.check import WorkingTree
from slipway.emulator.github import FakeGitHub

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "compose-corpus"
PROJECTS = sorted(p for p in (CORPUS / "awesome-compose").iterdir() if p.is_dir()) + sorted(
    p for p in (CORPUS / "example-voting-app").iterdir() if p.is_dir()
)
NAMES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-stack.yml")

# Each refused project's problems, reviewed by hand against its compose file: (where, what the
# problem says). Beside named volumes, which are read here with SLIPWAY_LOCAL_VOLUMES=allow (issue 28),
# three things stop them, each a rule of Slipway's: a secret read from a file of the repository (its
# value belongs in SSM), a folder of the repository bound into a container (a development set-up: a
# node has no checkout), a file of the repository bound writable. Every other project deploys.
FOLDER, WRITABLE, SECRET = "binds the folder", "from the repository writable", "is no secret"
REFUSED = {
    "angular": [("services.web.volumes[0]", FOLDER)],
    "apache-php": [("services.web.volumes[0]", FOLDER)],
    "elasticsearch-logstash-kibana": [
        ("services.logstash.volumes[0]", WRITABLE),
        ("services.logstash.volumes[1]", WRITABLE),
    ],
    "flask-redis": [("services.web.volumes[0]", FOLDER)],
    "nginx-aspnet-mysql": [("secrets.db-password.file", SECRET)],
    "nginx-flask-mongo": [("services.backend.volumes[0]", FOLDER), ("services.web.volumes[0]", WRITABLE)],
    "nginx-flask-mysql": [("secrets.db-password.file", SECRET)],
    "nginx-golang-mysql": [("secrets.db-password.file", SECRET)],
    "nginx-golang-postgres": [("secrets.db-password.file", SECRET)],
    "nginx-wsgi-flask": [("services.nginx-proxy.volumes[0]", WRITABLE)],
    "prometheus-grafana": [("services.grafana.volumes[0]", FOLDER), ("services.prometheus.volumes[0]", FOLDER)],
    "react-express-mongodb": [("services.backend.volumes[0]", FOLDER), ("services.frontend.volumes[0]", FOLDER)],
    "react-express-mysql": [
        ("secrets.db-password.file", SECRET),
        ("services.backend.volumes[0]", FOLDER),
        ("services.backend.volumes[1]", WRITABLE),
        ("services.backend.volumes[2]", WRITABLE),
        ("services.frontend.volumes[0]", FOLDER),
    ],
    "react-java-mysql": [("secrets.db-password.file", SECRET), ("services.frontend.volumes[0]", FOLDER)],
    "react-rust-postgres": [("services.backend.volumes[0]", FOLDER), ("services.frontend.volumes[0]", FOLDER)],
    "sparkjava-mysql": [("secrets.db-password.file", SECRET)],
    "spring-postgres": [("secrets.db-password.file", SECRET)],
    "vuejs": [("services.web.volumes[0]", FOLDER)],
    "wasmedge-kafka-mysql": [("services.redpanda.volumes[0]", FOLDER)],
    "wasmedge-mysql-nginx": [("services.frontend.volumes[0]", FOLDER)],
    # example-voting-app's development file mounts its sources and health scripts; its stack file deploys
    "docker-compose": [
        ("services.db.volumes[1]", FOLDER),
        ("services.redis.volumes[0]", FOLDER),
        ("services.result.volumes[0]", FOLDER),
        ("services.vote.volumes[0]", FOLDER),
    ],
}


def _compose_file(project: Path) -> str:
    return next(p.name for p in sorted(project.iterdir()) if p.name in NAMES)


class CorpusFiles:
    """A corpus project's files as its repository has them: the copied files, and the folders its
    .corpus-dirs lists (the repository's folders, not copied)."""

    def __init__(self, project: Path) -> None:
        self.project = project
        dirs = (project / ".corpus-dirs").read_text().split() if (project / ".corpus-dirs").exists() else []
        skipped = project / ".corpus-skipped"
        self.big = {line.split("\t")[0] for line in skipped.read_text().splitlines()} if skipped.exists() else set()
        self.dirs = {d.strip("/") for d in dirs if d.strip("/") not in ("", ".")}

    def kind(self, path: str) -> str | None:
        if path in self.dirs or any(d.startswith(path + "/") for d in self.dirs):
            return "dir"
        if path in self.big:
            return "file"
        where = self.project / path
        return "file" if where.is_file() else "dir" if where.is_dir() else None

    def read(self, path: str) -> bytes | None:
        if path in self.big:
            return b"x" * 65536
        where = self.project / path
        return where.read_bytes() if where.is_file() else None


def _read(project: Path) -> stack.Reading:
    name = _compose_file(project)
    return stack.read((project / name).read_bytes(), path=name, local_volumes=True, files=CorpusFiles(project))


@pytest.mark.parametrize("project", PROJECTS, ids=lambda p: p.name)
def test_each_public_compose_file_is_accepted_or_refused_as_expected(project):
    reading = _read(project)
    expected = REFUSED.get(project.name, [])
    assert len(reading.problems) == len(expected), reading.problems
    for problem, (where, what) in zip(reading.problems, expected, strict=True):
        assert problem.startswith(where) and what in problem, problem


def test_most_of_the_corpus_deploys_as_written():
    accepted = [p.name for p in PROJECTS if not _read(p).problems]
    assert len(accepted) == len(PROJECTS) - len(REFUSED) == 20


@pytest.mark.parametrize("project", [p for p in PROJECTS if p.name not in REFUSED], ids=lambda p: p.name)
def test_an_accepted_file_leaves_nothing_for_the_manager_to_refuse(project):
    reading = _read(project)
    assert reading.problems == ()
    assert reading.stack is not None
    document = stack.rendered(reading.stack, {k: f"{k}-v1" for k in reading.stack.secrets}, _images(reading.stack))
    for name, service in document["services"].items():
        assert "env_file" not in service, name
        assert "build" not in service, name
        for mount in service.get("volumes") or []:
            source = mount.split(":", 1)[0] if isinstance(mount, str) else str(mount.get("source") or "")
            assert not source.startswith("."), (name, mount)  # no bind of a checkout the manager lacks
    for key, config in (document.get("configs") or {}).items():
        assert config.get("external") or str(config.get("file", "")).startswith("configs/"), key
    assert "${" not in json.dumps(document).replace("$${", ""), "a variable left for the manager's empty environment"


def _images(parsed: stack.Stack) -> dict[str, str]:
    return {name: f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/slipway/dev/{name}:k" for name in parsed.builds}


def test_the_corpus_is_what_its_readme_says():
    inventory = json.loads((CORPUS / "inventory.json").read_text())
    assert sorted(i["project"] for i in inventory) == sorted(f"{p.parent.name}/{p.name}" for p in PROJECTS)
    assert (
        "CC0" in (CORPUS / "awesome-compose" / "LICENSE").read_text()
        or "Creative Commons" in (CORPUS / "awesome-compose" / "LICENSE").read_text()
    )


@pytest.fixture(scope="module")
def corpus_repository(tmp_path_factory):
    """The corpus as one git repository (a project per folder, the listed folders made real), served
    by the local GitHub."""
    root = tmp_path_factory.mktemp("corpus")
    for project in PROJECTS:
        files = CorpusFiles(project)
        for source in project.rglob("*"):
            if source.is_file() and not source.name.startswith(".corpus-"):
                target = root / project.name / source.relative_to(project)  # each project a folder
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(source.read_bytes())
        for folder in files.dirs:
            (root / project.name / folder).mkdir(parents=True, exist_ok=True)
            (root / project.name / folder / ".keep").write_text("")
        for path in files.big:
            (root / project.name / path).write_bytes(b"x" * 65536)
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A", "-f"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "corpus"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    server = FakeGitHub(root)
    server.start()
    yield root, commit, server
    server.stop()


@pytest.mark.parametrize("project", PROJECTS, ids=lambda p: p.name)
def test_slipway_check_agrees_with_the_pipelines_reading(project, corpus_repository):
    root, commit, server = corpus_repository
    path = f"{project.name}/{_compose_file(project)}"
    data = (root / path).read_bytes()
    pipeline = stack.read(
        data, path=path, local_volumes=True, files=github.CommitFiles(server.url, "corpus/awesome", commit)
    )
    local = stack.read(data, path=path, local_volumes=True, files=WorkingTree(root))
    assert local.problems == pipeline.problems
    assert local.warnings == pipeline.warnings
    assert (local.stack and local.stack.document) == (pipeline.stack and pipeline.stack.document)
