"""What a crashed run left behind, removed by its labels; and `python -m slipway.realnodes
check | bake TAG | cleanup [--images]`."""

from __future__ import annotations

import shutil
import subprocess
import sys

from slipway.realnodes.bake import bake_available, bake_image, node_images, remove_images
from slipway.realnodes.dockercli import LABEL, run_docker


def cleanup(run_id: str | None = None, *, images: list[str] | None = None, all_images: bool = False) -> dict[str, int]:
    """Remove the containers and networks labelled slipway.emulator (of one run, or of every
    run), and the given images (or, with all_images, every labelled node image). Never raises."""
    counts = {"containers": 0, "networks": 0, "images": 0}
    if shutil.which("docker") is None:
        return counts
    label = f"{LABEL}={run_id}" if run_id else LABEL
    try:
        containers = run_docker("ps", "-aq", "--filter", f"label={label}", check=False).stdout.split()
        if containers:
            run_docker("rm", "-f", "-v", *containers, check=False, timeout=300)
            counts["containers"] = len(containers)
        volumes = run_docker("volume", "ls", "-q", "--filter", f"label={label}", check=False).stdout.split()
        if volumes:
            run_docker("volume", "rm", "-f", *volumes, check=False, timeout=300)
        networks = run_docker("network", "ls", "-q", "--filter", f"label={label}", check=False).stdout.split()
        for network in networks:
            if run_docker("network", "rm", network, check=False).returncode == 0:
                counts["networks"] += 1
        doomed = list(images or [])
        if all_images:
            doomed += node_images()
        counts["images"] = remove_images(doomed)
    except (OSError, subprocess.SubprocessError):
        pass
    return counts


def main(argv: list[str] | None = None) -> int:
    """python -m slipway.realnodes check | bake TAG | cleanup [--images]"""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("check", "bake", "cleanup"):
        print(main.__doc__)
        return 2
    if args[0] == "check":
        reason = bake_available()
        print(reason or "real nodes can run here")
        return 1 if reason else 0
    if args[0] == "bake":
        if len(args) != 2:
            print("usage: python -m slipway.realnodes bake TAG")
            return 2
        print(bake_image(args[1]))
        return 0
    counts = cleanup(all_images="--images" in args)
    print(", ".join(f"{n} {what} removed" for what, n in counts.items()))
    return 0
