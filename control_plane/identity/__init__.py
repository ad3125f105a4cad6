"""Who is calling: users' bearer tokens (stored hashed), each node's own credential from its join
(stored hashed) and the keys derived for it, and the box that seals secrets in the database.

Coming here: tenants, users, expiring and revocable tokens, roles, grants and quotas.
"""

from control_plane.identity.auth import Authenticator, NodeIdentity, Principal
from control_plane.identity.nodes import NODE_KEY_SEED, NodeKeys, credential, new_node_secret
from control_plane.identity.secrets import SecretBox, SecretKeyError, write_secret

__all__ = ["NODE_KEY_SEED", "Authenticator", "NodeIdentity", "NodeKeys", "Principal", "SecretBox",
           "SecretKeyError", "credential", "new_node_secret", "write_secret"]
