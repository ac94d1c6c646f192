"""Reading Compose files as 'Read the stack file' does (chalicelib/stack.py `read`: YAML, `${VAR}`,
both schemas, the commit's files, normalizing), on the public corpus of tests/fixtures/compose-corpus/
and on a generated 200-service file (valid, and with every service broken the same way): per-file
time warm, and the first read in a fresh interpreter (what a Lambda's cold start pays: importing and
compiling the schemas). Figures only."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from chalicelib import stack
from slipway import PROJECT_DIR

CORPUS = PROJECT_DIR / "tests" / "fixtures" / "compose-corpus" / "awesome-compose"


class _Folder:
    """A project folder as a commit's files (the corpus keeps only the files its compose file reads)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def kind(self, path: str) -> str | None:
        where = self.root / path
        return "file" if where.is_file() else "dir" if where.is_dir() else None

    def read(self, path: str) -> bytes | None:
        where = self.root / path
        return where.read_bytes() if where.is_file() else None


def _files() -> list[tuple[str, bytes, _Folder]]:
    found = []
    for project in sorted(p for p in CORPUS.iterdir() if p.is_dir()):
        name = next(p.name for p in sorted(project.iterdir()) if p.name in ("compose.yaml", "compose.yml"))
        found.append((project.name, (project / name).read_bytes(), _Folder(project)))
    return found


def _large() -> bytes:
    services = "".join(
        f"  s{i}:\n    image: registry.example/app/s{i}:${{TAG:-1}}\n    restart: always\n"
        f"    environment: {{INDEX: '{i}', TZ: '${{TZ:-UTC}}'}}\n"
        f"    deploy: {{replicas: 2}}\n    healthcheck: {{test: [CMD, 'true'], interval: 10s}}\n"
        for i in range(200)
    )
    return f"services:\n{services}".encode()


def _time(data: bytes, files: _Folder | None, rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        stack.read(data, path="compose.yaml", local_volumes=True, files=files)
        samples.append(time.perf_counter() - start)
    return samples


def main() -> dict:
    corpus = _files()
    for _, data, files in corpus:  # compile the schemas once
        stack.read(data, path="compose.yaml", local_volumes=True, files=files)
    per_file = {name: statistics.median(_time(data, files, 20)) for name, data, files in corpus}
    large = _large()
    large_samples = _time(large, None, 10)
    broken = large.replace(b"'true'", b"true")  # a boolean where the schema wants a string, 200 times
    broken_samples = _time(broken, None, 3)
    first = [
        float(
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import time; t = time.perf_counter(); from chalicelib import stack; "
                    f"stack.read(open({str(CORPUS / 'nginx-golang' / 'compose.yaml')!r}, 'rb').read(), path='c.yaml'); "
                    "print(time.perf_counter() - t)",
                ],
                cwd=PROJECT_DIR,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        for _ in range(3)
    ]
    return {
        "files": len(corpus),
        "median_ms": statistics.median(per_file.values()) * 1e3,
        "slowest": max(per_file, key=lambda k: per_file[k]),
        "slowest_ms": max(per_file.values()) * 1e3,
        "large_bytes": len(large),
        "large_ms": statistics.median(large_samples) * 1e3,
        "broken_ms": statistics.median(broken_samples) * 1e3,
        "first_read_fresh_ms": statistics.median(first) * 1e3,
    }


def report(results: dict) -> None:
    print("reading Compose files (stack.read: YAML, ${VAR}, compose-spec and docker/cli schemas, the commit's files)")
    print(
        f"  corpus: {results['files']} public files, median {results['median_ms']:.1f} ms per file warm, slowest "
        f"{results['slowest']} {results['slowest_ms']:.1f} ms"
    )
    print(
        f"  a generated 200-service file ({results['large_bytes']} B): {results['large_ms']:.0f} ms warm; "
        f"with each service's healthcheck broken (200 problems): {results['broken_ms']:.0f} ms"
    )
    print(f"  first read in a fresh interpreter (import, schemas compiled): {results['first_read_fresh_ms']:.0f} ms")


if __name__ == "__main__":
    report(main())
