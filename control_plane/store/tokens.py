"""API tokens, stored as their SHA-256 (the plain token is shown once, never kept)."""

from __future__ import annotations

import hashlib
import secrets

from sqlmodel import select

from control_plane.store.tables import ApiToken
from control_plane.store.unit import Repository


def hash_token(token: str) -> str:
    """Tokens are stored and compared as SHA-256 hex digests."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenRepository(Repository):
    """The admin token and token lookups by hash."""

    def ensure_admin_token(self) -> str | None:
        """Create the admin token on first start; returns it then, None when one exists."""
        with self.session() as s:
            if s.exec(select(ApiToken).where(ApiToken.is_admin)).first() is not None:
                return None
            token = "cmls_" + secrets.token_urlsafe(32)
            s.add(ApiToken(token_hash=hash_token(token), name="admin", is_admin=True))
            return token

    def token_by_hash(self, token_hash: str) -> ApiToken | None:
        """The token with this hash, if any."""
        with self.session() as s:
            return s.exec(select(ApiToken).where(ApiToken.token_hash == token_hash)).first()
