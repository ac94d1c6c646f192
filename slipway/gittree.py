"""Git's object ids of files on disk, as git would give them if they were committed as they are now:
what the local GitHub stand-in answers for commits it makes up, and what `slipway bootstrap` and the
emulator key the installation's node image by (packer/ and ansible/ as this checkout has them)."""

from __future__ import annotations

import hashlib
import io
import subprocess
import zipfile
from pathlib import Path


def _git_object(kind: str, data: bytes) -> bytes:
    return hashlib.sha1(f"{kind} {len(data)}\0".encode() + data).digest()


def files(folder: Path) -> list[Path]:
    """The files git would commit under `folder` (its ignore rules applied where it can tell)."""
    listed = subprocess.run(
        ["git", "-C", str(folder), "ls-files", "-z", "--cached", "--others", "--exclude-standard", "."],
        capture_output=True,
    )
    if listed.returncode == 0:
        return [folder / name for name in listed.stdout.decode().split("\0") if name and (folder / name).is_file()]
    return [p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts]


def working_tree_id(folder: Path) -> str:
    """The git tree id `folder` would have if committed as it is now."""
    listed = files(folder)

    def tree(path: Path) -> bytes:
        children = {}
        for f in listed:
            try:
                rel = f.relative_to(path)
            except ValueError:
                continue
            name = rel.parts[0]
            children[name] = len(rel.parts) > 1
        entries = []
        for name in sorted(children, key=lambda n: n + ("/" if children[n] else "")):
            child = path / name
            if children[name]:
                entries.append(b"40000 " + name.encode() + b"\0" + tree(child))
            else:
                mode = b"100755" if child.stat().st_mode & 0o111 else b"100644"
                entries.append(mode + b" " + name.encode() + b"\0" + _git_object("blob", child.read_bytes()))
        return _git_object("tree", b"".join(entries))

    return tree(folder).hex()


def tree_objects(root: Path) -> tuple[str, dict[str, dict[str, tuple[str, str]]]]:
    """Every tree git would make of `root` as it is now: the root's id, and {tree id: {name:
    (type, id)}} for each (what GET .../git/trees/{sha} lists)."""
    listed = files(root)
    objects: dict[str, dict[str, tuple[str, str]]] = {}

    def tree(path: Path) -> bytes:
        children: dict[str, bool] = {}
        for f in listed:
            try:
                rel = f.relative_to(path)
            except ValueError:
                continue
            children[rel.parts[0]] = len(rel.parts) > 1
        entries, listing = [], {}
        for name in sorted(children, key=lambda n: n + ("/" if children[n] else "")):
            child = path / name
            if children[name]:
                sha = tree(child)
                entries.append(b"40000 " + name.encode() + b"\0" + sha)
                listing[name] = ("tree", sha.hex())
            else:
                mode = b"100755" if child.stat().st_mode & 0o111 else b"100644"
                sha = _git_object("blob", child.read_bytes())
                entries.append(mode + b" " + name.encode() + b"\0" + sha)
                listing[name] = ("blob", sha.hex())
        own = _git_object("tree", b"".join(entries))
        objects[own.hex()] = listing
        return own

    return tree(root).hex(), objects


def folders_zip(root: Path, folders: tuple[str, ...], prefix: str = "") -> bytes:
    """The files git would commit under each of `folders` of `root` ("." for all), zipped at their
    paths from `root` (after `prefix`, as GitHub's archives put them under one folder) with fixed
    timestamps and their Unix modes (the same content gives the same bytes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for folder in folders:
            for path in sorted(files(root / folder)):
                info = zipfile.ZipInfo(prefix + str(path.relative_to(root)), (1980, 1, 1, 0, 0, 0))
                info.external_attr = (path.stat().st_mode & 0o777) << 16
                archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()
