"""The function-code server of the VM tier, as the tests see it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CodeServer:
    """Serves one function zip on 127.0.0.1:`port`, which guests reach at 10.0.2.2:`port`."""

    port: int
    digest: str

    @property
    def guest_url(self) -> str:
        """The zip's URL as a guest sees it."""
        return f"http://10.0.2.2:{self.port}/code/{self.digest}.zip"
