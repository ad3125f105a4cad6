"""The function-code server of the VM tier, as the tests see it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CodeServer:
    """Serves function zips on 127.0.0.1:`port`, which guests reach at 10.0.2.2:`port`: the hello
    function (`digest`) and a network probe (`probe_digest`)."""

    port: int
    digest: str
    probe_digest: str = ""

    @property
    def guest_url(self) -> str:
        """The hello zip's URL as a guest sees it."""
        return self.url_of(self.digest)

    def url_of(self, digest: str) -> str:
        """A zip's URL as a guest sees it."""
        return f"http://10.0.2.2:{self.port}/code/{digest}.zip"
