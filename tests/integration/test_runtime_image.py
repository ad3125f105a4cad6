"""Where a node's runtime image comes from: built from Debian's mirror (cached), or a registry
reference pulled when the engine lacks it (here only a loopback registry that does not exist)."""

from __future__ import annotations

import pytest
from helpers import docker_client

from node_agent.image import DEFAULT_RECIPE, ImageBuildError, ensure_image

pytestmark = pytest.mark.docker


def test_built_image_and_present_reference(docker_engine: None) -> None:
    client = docker_client()
    assert ensure_image(client) == DEFAULT_RECIPE.tag  # built or imported from the cache
    assert ensure_image(client, DEFAULT_RECIPE.tag) == DEFAULT_RECIPE.tag  # present: no pull


def test_unreachable_registry_is_a_clear_error(docker_engine: None) -> None:
    with pytest.raises(ImageBuildError, match=r"cannot pull the runtime image 127\.0\.0\.1:1/none/python:3"):
        ensure_image(docker_client(), "127.0.0.1:1/none/python:3")
