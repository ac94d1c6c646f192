"""Real nodes: containers from the converged node image, each with its own dockerd. Needs root,
debootstrap, the docker CLI and a running dockerd (CI starts one); where one is missing the tests
skip and say which, except on CI, where that is a failure (the `require` fixture)."""

from __future__ import annotations

import pytest

from slipway import realnodes
from slipway.realnodes import registry


@pytest.fixture(scope="module")
def image(require):
    """The working tree's node image, shared with the other real-node modules running beside this
    one: tests/conftest.py removes it when the whole session ends (if the session made it)."""
    require(realnodes.bake_available())
    yield realnodes.bake_image(realnodes.working_tree_tag(), log=lambda line: None)


@pytest.fixture(scope="module")
def local_registry_available(require) -> None:
    """Debian's docker-registry, which holds the images real stacks pull."""
    require(registry.registry_available())
