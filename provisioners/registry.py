"""Providers by name, imported lazily: importing `provisioners` never imports boto3 or libcloud,
and a missing optional dependency is reported when that provider is chosen."""

from __future__ import annotations

import importlib
from typing import Any

from provisioners.base import ProviderError

PROVIDERS: dict[str, str] = {
    "local": "provisioners.local:LocalProvider",
    "qemu": "provisioners.qemu.provider:QemuProvider",
    "aws": "provisioners.aws:AwsProvider",
    "libcloud": "provisioners.cloud_libcloud:LibcloudProvider",
}


def provider_class(name: str) -> Any:
    """The provider class registered as `name`."""
    target = PROVIDERS.get(name)
    if target is None:
        raise ProviderError(f"unknown provider {name!r}; choose one of {', '.join(sorted(PROVIDERS))}")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ProviderError(f"provider {name!r} needs a package that is not installed: {exc}") from exc
    return getattr(module, attr)
