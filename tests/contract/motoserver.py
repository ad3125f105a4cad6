"""Where the tests' moto server listens (started by the `moto_server` fixture in conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MotoServer:
    """A running moto server: its endpoint and the AMI the tests boot."""

    host: str
    port: int
    region: str = "us-east-1"

    @property
    def endpoint_url(self) -> str:
        """The URL boto3's `endpoint_url` takes."""
        return f"http://{self.host}:{self.port}"
