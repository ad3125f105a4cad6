"""Who is calling and what they may do: tenants, users, tokens (hashed, expiring, revocable,
rotatable, scoped), roles and grants, with the one `authorize(principal, action, resource)`; each
node's own credential from its join and the keys derived for it; the box that seals secrets in the
database."""

from control_plane.identity.access import (
    CLUSTER,
    DEFAULT_TENANT,
    RESERVED_NAMES,
    Action,
    Admin,
    FunctionRef,
    Grant,
    Permission,
    Principal,
    Role,
    TenantRef,
    allowed,
    authorize,
)
from control_plane.identity.accounts import Accounts, check_function_name
from control_plane.identity.auth import Authenticator, NodeIdentity, principal_of
from control_plane.identity.nodes import NODE_KEY_SEED, NodeKeys, credential, new_node_secret
from control_plane.identity.quotas import Governor, TenantLimits
from control_plane.identity.schemas import (
    QUOTAS,
    GrantCreate,
    GrantPublic,
    Quotas,
    TenantCreate,
    TenantPublic,
    TenantUpdate,
    TokenCreate,
    TokenPublic,
    TokenRotate,
    TokenSecret,
    UserCreate,
    UserPublic,
    UserUpdate,
    WhoAmI,
)
from control_plane.identity.secrets import SecretBox, SecretKeyError, write_secret

__all__ = ["CLUSTER", "DEFAULT_TENANT", "NODE_KEY_SEED", "QUOTAS", "RESERVED_NAMES", "Accounts", "Action",
           "Admin", "Authenticator", "FunctionRef", "Governor", "Grant", "GrantCreate", "GrantPublic",
           "NodeIdentity", "NodeKeys", "Permission", "Principal", "Quotas", "Role", "SecretBox",
           "SecretKeyError", "TenantCreate", "TenantLimits", "TenantPublic", "TenantRef", "TenantUpdate",
           "TokenCreate", "TokenPublic", "TokenRotate", "TokenSecret", "UserCreate", "UserPublic",
           "UserUpdate", "WhoAmI", "allowed", "authorize", "check_function_name", "credential",
           "new_node_secret", "principal_of", "write_secret"]
