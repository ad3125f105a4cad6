"""The `Store`: the one door to the database. One transaction per unit of work."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, create_engine, delete, func, select

from control_plane.errors import ConflictError, FunctionNotFound, Unauthorized
from control_plane.events import Event
from control_plane.models import (
    ApiToken,
    CodeArtifact,
    FleetEvent,
    Function,
    FunctionConfig,
    FunctionVersion,
    InstanceIntent,
    InvocationLog,
    JoinToken,
    NodeRecord,
    ProviderIntent,
)
from control_plane.store_cluster import ClusterStore, Fence

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

LogRow = tuple[str, int, str, float, float, str, bool, str]
"""One invocation record: function, version, request id, start time, duration ms, outcome, cold, logs."""


def hash_token(token: str) -> str:
    """Tokens are stored and compared as SHA-256 hex digests."""
    return hashlib.sha256(token.encode()).hexdigest()


MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    """Alembic's configuration for our migrations, bound to `connection` if given."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to `revision` (on start: an empty database gets every table)."""
    from alembic import command

    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


class Store(ClusterStore):
    """Functions, versions, tokens, nodes, intents, events and invocation logs; what several
    control planes share comes from `ClusterStore`."""

    def __init__(self, url: str) -> None:
        is_sqlite = url.startswith("sqlite")
        self.engine: Engine = create_engine(
            url, connect_args={"check_same_thread": False} if is_sqlite else {}, pool_pre_ping=True)
        if is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        migrate(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose work commits at the end of the block, or rolls back on error."""
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    # -- tokens --------------------------------------------------------------------------------
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

    # -- joining nodes ---------------------------------------------------------------------------
    def issue_join_token(self, request_id: str, provider: str, node_type: str, ttl_s: float) -> str:
        """A fresh join token for a provision request (replacing an unused one for the same id)."""
        token = "cmlj_" + secrets.token_urlsafe(32)
        with self.session() as s:
            old = s.exec(select(JoinToken).where(JoinToken.request_id == request_id)).first()
            if old is not None:
                if old.used_at is not None:
                    raise ConflictError(f"provision request {request_id} already joined as {old.node_id}")
                s.delete(old)
                s.flush()
            s.add(JoinToken(token_hash=hash_token(token), request_id=request_id, provider=provider,
                            node_type=node_type, expires_at=time.time() + ttl_s))
        return token

    def redeem_join_token(self, token: str, node_id: str) -> JoinToken:
        """Use a join token once; Unauthorized if unknown, used or expired."""
        with self.session() as s:
            row = s.get(JoinToken, hash_token(token))
            if row is None or row.used_at is not None or row.expires_at < time.time():
                raise Unauthorized("the join token is unknown, already used or expired")
            row.used_at = time.time()
            row.node_id = node_id
            s.add(row)
            return row

    # -- functions -----------------------------------------------------------------------------
    def add_version(self, config: FunctionConfig, code_digest: str, code_size: int) -> FunctionVersion:
        """Record a new immutable version of `config.name` (creating the function if new)."""
        for _ in range(5):  # two deploys of one function may race for a version number
            try:
                with self.session() as s:
                    fn = s.get(Function, config.name)
                    if fn is None:
                        fn = Function(name=config.name)
                    fn.latest_version += 1
                    fn.updated_at = time.time()
                    s.add(fn)
                    ver = FunctionVersion(function=config.name, version=fn.latest_version,
                                          config_json=config.model_dump_json(), code_digest=code_digest,
                                          code_size=code_size)
                    s.add(ver)
                    return ver
            except IntegrityError:
                continue
        raise ConflictError(f"too many concurrent deployments of {config.name}")

    def get_function(self, name: str) -> tuple[Function, FunctionVersion]:
        """The function and its latest version; FunctionNotFound if unknown."""
        with self.session() as s:
            fn = s.get(Function, name)
            if fn is None:
                raise FunctionNotFound(name)
            ver = s.exec(select(FunctionVersion).where(FunctionVersion.function == name,
                                                        FunctionVersion.version == fn.latest_version)).one()
            return fn, ver

    def list_functions(self) -> list[tuple[Function, FunctionVersion]]:
        """Every function with its latest version, by name."""
        with self.session() as s:
            rows = s.exec(select(Function, FunctionVersion)
                          .join(FunctionVersion, col(FunctionVersion.function) == col(Function.name))
                          .where(col(FunctionVersion.version) == col(Function.latest_version))
                          .order_by(col(Function.name))).all()
            return [(fn, ver) for fn, ver in rows]

    def delete_function(self, name: str) -> list[str]:
        """Delete a function, its versions and logs; returns the code digests no longer used."""
        with self.session() as s:
            fn = s.get(Function, name)
            if fn is None:
                raise FunctionNotFound(name)
            digests = set(s.exec(select(FunctionVersion.code_digest)
                                 .where(FunctionVersion.function == name)).all())
            s.exec(delete(FunctionVersion).where(col(FunctionVersion.function) == name))
            s.exec(delete(InvocationLog).where(col(InvocationLog.function) == name))
            s.delete(fn)
            s.flush()
            still = set(s.exec(select(FunctionVersion.code_digest)
                               .where(col(FunctionVersion.code_digest).in_(digests))).all())
            unused = sorted(digests - still)
            s.exec(delete(CodeArtifact).where(col(CodeArtifact.digest).in_(unused)))
            return unused

    def digest_in_use(self, digest: str) -> bool:
        """Whether any version still references this code digest."""
        with self.session() as s:
            return s.exec(select(FunctionVersion.id).where(FunctionVersion.code_digest == digest)).first() \
                is not None

    # -- nodes ---------------------------------------------------------------------------------
    REMOVED = "removed"
    """A node removed on purpose keeps a tombstone row, so that no control plane revives it from
    a late heartbeat (HA: another control plane may still hear from it)."""

    def upsert_node(self, node: NodeRecord) -> None:
        """Insert or update a node's record (never reviving a removed node, nor undoing a drain
        another control plane's heartbeat did not know of)."""
        with self.session() as s:
            old = s.get(NodeRecord, node.id)
            if old is not None and old.state == self.REMOVED:
                return
            if old is not None and old.state == "draining" and node.state == "ready":
                node.state = old.state
            s.merge(node)

    def list_nodes(self, *, removed: bool = False) -> Sequence[NodeRecord]:
        """Every node record (the removed ones too if `removed`)."""
        with self.session() as s:
            query = select(NodeRecord).order_by(col(NodeRecord.id))
            if not removed:
                query = query.where(NodeRecord.state != self.REMOVED)
            return s.exec(query).all()

    def set_node_state(self, node_id: str, state: str) -> None:
        """Change one node's state (a removed node stays removed)."""
        with self.session() as s:
            node = s.get(NodeRecord, node_id)
            if node is not None and node.state != self.REMOVED:
                node.state = state
                s.add(node)

    def delete_node(self, node_id: str) -> None:
        """Forget a node: it leaves a tombstone, purged after a day."""
        with self.session() as s:
            node = s.get(NodeRecord, node_id)
            if node is not None:
                node.state = self.REMOVED
                node.last_heartbeat = time.time()
                s.add(node)
            s.execute(delete(NodeRecord).where(col(NodeRecord.state) == self.REMOVED,
                                               col(NodeRecord.last_heartbeat) < time.time() - 86400))

    # -- instance intents ------------------------------------------------------------------------
    def open_instance_intent(self, intent: InstanceIntent) -> None:
        """Write down a start or stop before asking the agent (a stop replaces a start)."""
        with self.session() as s:
            s.merge(intent)

    def close_instance_intent(self, instance_id: str, kind: str) -> None:
        """The agent answered: the intent of this kind is done (a newer one of another kind stays)."""
        with self.session() as s:
            s.execute(delete(InstanceIntent).where(col(InstanceIntent.instance_id) == instance_id,
                                                   col(InstanceIntent.kind) == kind))

    def instance_intents(self, owner: str) -> list[InstanceIntent]:
        """The open instance intents of control plane `owner`."""
        with self.session() as s:
            return list(s.exec(select(InstanceIntent).where(InstanceIntent.owner == owner)).all())

    def functions_marker(self) -> tuple[int, float]:
        """(number of functions, last change): changes when any function is deployed or removed."""
        with self.session() as s:
            count, last = s.exec(select(func.count(), func.max(Function.updated_at))).one()
            return int(count), float(last or 0.0)

    # -- provider intents ----------------------------------------------------------------------
    def open_intent(self, request_id: str, kind: str, provider: str, *, node_type: str = "",
                    provider_ids: Sequence[str] = (), fence: Fence | None = None) -> None:
        """Write down a provider call before making it (idempotent by request id). With a
        `fence`, only while that leader lease is still held (LeaseLost otherwise)."""
        with self.session() as s:
            if fence is not None:
                self.check_fence(s, fence, time.time())
            if s.get(ProviderIntent, request_id) is None:
                s.add(ProviderIntent(request_id=request_id, kind=kind, provider=provider, node_type=node_type,
                                     provider_ids=",".join(provider_ids)))

    def update_intent(self, request_id: str, state: str, provider_ids: Sequence[str] = (), *,
                      fence: Fence | None = None) -> None:
        """Record how a provider call went (and which machines it concerns); with a `fence`,
        only while that leader lease is still held (LeaseLost otherwise)."""
        with self.session() as s:
            if fence is not None:
                self.check_fence(s, fence, time.time())
            row = s.get(ProviderIntent, request_id)
            if row is not None:
                row.state = state
                if provider_ids:
                    row.provider_ids = ",".join(provider_ids)
                row.updated_at = time.time()
                s.add(row)

    def open_intents(self, provider: str) -> list[ProviderIntent]:
        """Intents of `provider` not finished yet, oldest first."""
        with self.session() as s:
            return list(s.exec(select(ProviderIntent)
                               .where(ProviderIntent.provider == provider,
                                      col(ProviderIntent.state).in_(("open", "created")))
                               .order_by(col(ProviderIntent.created_at))).all())

    # -- fleet events ------------------------------------------------------------------------------
    def add_events(self, events: Sequence[Event]) -> None:
        """Append fleet events."""
        with self.session() as s:
            s.add_all(FleetEvent(at=e.at, kind=e.kind, reason=e.reason, node_id=e.node_id) for e in events)

    def events(self, limit: int) -> list[FleetEvent]:
        """The newest `limit` events, oldest first."""
        with self.session() as s:
            rows = s.exec(select(FleetEvent).order_by(col(FleetEvent.id).desc()).limit(limit)).all()
            return list(reversed(rows))

    # -- invocation logs -----------------------------------------------------------------------
    def add_logs(self, records: Sequence[LogRow], retention: int) -> None:
        """Append invocation records (one Core executemany, no ORM objects: this runs at the rate of
        invocations), keeping the newest `retention` per function."""
        rows = [{"function": f, "version": v, "request_id": r, "started_at": t, "duration_ms": d,
                 "outcome": o, "cold_start": c, "logs": text} for f, v, r, t, d, o, c, text in records]
        with self.session() as s:
            s.execute(InvocationLog.__table__.insert(), rows)  # type: ignore[attr-defined]
            for name in {r[0] for r in records}:
                count = s.exec(select(func.count()).where(InvocationLog.function == name)).one()
                if count > retention:
                    cutoff = s.exec(select(InvocationLog.id).where(InvocationLog.function == name)
                                    .order_by(col(InvocationLog.id).desc())
                                    .offset(retention).limit(1)).first()
                    if cutoff is not None:
                        s.exec(delete(InvocationLog).where(
                            col(InvocationLog.function) == name, col(InvocationLog.id) <= cutoff))

    def logs(self, name: str, limit: int) -> list[InvocationLog]:
        """The newest `limit` invocation records of a function, oldest first."""
        with self.session() as s:
            rows = s.exec(select(InvocationLog).where(InvocationLog.function == name)
                          .order_by(col(InvocationLog.id).desc()).limit(limit)).all()
            return list(reversed(rows))
