"""Control-plane membership and the leader lease (HA): which control plane runs the fleet loop."""

from control_plane.cluster.leadership import LEASE, Leadership
from control_plane.cluster.members import member_id
from control_plane.cluster.schemas import ControlPlanePublic

__all__ = ["LEASE", "ControlPlanePublic", "Leadership", "member_id"]
