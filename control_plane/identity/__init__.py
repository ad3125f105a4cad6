"""Who is calling: users' bearer tokens (stored hashed) and the node agents' shared secret.

Coming here: tenants, users, expiring and revocable tokens, roles, grants and quotas.
"""

from control_plane.identity.auth import Authenticator, Principal
from control_plane.identity.secrets import cluster_node_token, write_secret

__all__ = ["Authenticator", "Principal", "cluster_node_token", "write_secret"]
