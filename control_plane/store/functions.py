"""Functions, their immutable versions, and their code artifacts."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, delete, func, select, update

from control_plane.core import ConflictError, FunctionNotFound, QuotaExceeded
from control_plane.store.tables import CodeArtifact, Function, FunctionVersion, InvocationLog, Tenant
from control_plane.store.unit import Repository


class FunctionRepository(Repository):
    """Versions are numbered per function; a deleted function takes its versions and logs along."""

    def add_version(self, name: str, config: dict[str, Any], code_digest: str,
                    code_size: int, layer_digest: str | None = None, *,
                    artifacts: Mapping[str, Callable[[], bytes]] | None = None,
                    tenant: str = "default", max_functions: int | None = None) -> FunctionVersion:
        """Record a new immutable version of `name` (creating the function of `tenant` if new, unless
        that tenant has `max_functions` already: QuotaExceeded), storing in the same transaction the
        artifacts it names that are not stored yet (`artifacts`: digest -> its bytes, read only if
        missing), so that deleting another function that shared one cannot leave this version
        naming an artifact that is gone."""
        for _ in range(5):  # two deploys of one function may race for a version number
            try:
                with self.session() as s:
                    fn = s.get(Function, name)
                    if fn is None:
                        if max_functions is not None:
                            # the tenant's row is the lock two first deploys of its functions meet at
                            s.exec(select(Tenant).where(Tenant.name == tenant).with_for_update()).first()
                            s.exec(update(Tenant).where(col(Tenant.name) == tenant)
                                   .values(created_at=Tenant.created_at))  # SQLite: take the write lock
                            count = s.exec(select(func.count()).select_from(Function)
                                           .where(Function.tenant == tenant)).one()
                            if count >= max_functions:
                                raise QuotaExceeded(f"tenant {tenant} has {count} functions, its quota "
                                                    f"'functions' is {max_functions}", quota="functions",
                                                    status=403)
                        fn = Function(name=name, tenant=tenant)
                    fn.latest_version += 1
                    fn.updated_at = time.time()
                    s.add(fn)
                    s.flush()  # a write first: SQLite's lock is held from here on
                    for digest, read in (artifacts or {}).items():
                        held = s.exec(select(CodeArtifact.digest).where(CodeArtifact.digest == digest)
                                      .with_for_update()).first()  # PostgreSQL: waits for a delete
                        if held is None:
                            data = read()
                            s.add(CodeArtifact(digest=digest, size=len(data), data=data))
                    ver = FunctionVersion(function=name, version=fn.latest_version, config=config,
                                          code_digest=code_digest, code_size=code_size,
                                          layer_digest=layer_digest)
                    s.add(ver)
                    return ver
            except IntegrityError:
                continue
        raise ConflictError(f"too many concurrent deployments of {name}")

    def get_function(self, name: str) -> tuple[Function, FunctionVersion]:
        """The function and its latest version; FunctionNotFound if unknown."""
        with self.session() as s:
            fn = s.get(Function, name)
            if fn is None:
                raise FunctionNotFound(name)
            ver = s.exec(select(FunctionVersion).where(FunctionVersion.function == name,
                                                        FunctionVersion.version == fn.latest_version)).one()
            return fn, ver

    def function_exists(self, name: str) -> bool:
        """Whether a function has this key."""
        with self.session() as s:
            return s.get(Function, name) is not None

    def list_functions(self, tenant: str | None = None) -> list[tuple[Function, FunctionVersion]]:
        """Every function (of `tenant`, if given) with its latest version, by name."""
        with self.session() as s:
            query = (select(Function, FunctionVersion)
                     .join(FunctionVersion, col(FunctionVersion.function) == col(Function.name))
                     .where(col(FunctionVersion.version) == col(Function.latest_version)))
            if tenant is not None:
                query = query.where(Function.tenant == tenant)
            rows = s.exec(query.order_by(col(Function.name))).all()
            return [(fn, ver) for fn, ver in rows]

    def delete_function(self, name: str) -> list[str]:
        """Delete a function, its versions and logs; returns the code digests no longer used (their
        artifacts are deleted too)."""
        with self.session() as s:
            fn = s.get(Function, name)
            if fn is None:
                raise FunctionNotFound(name)
            mine = s.exec(select(FunctionVersion.code_digest, FunctionVersion.layer_digest)
                          .where(FunctionVersion.function == name)).all()
            digests = {code for code, _ in mine} | {layer for _, layer in mine if layer}
            s.exec(delete(FunctionVersion).where(col(FunctionVersion.function) == name))
            s.exec(delete(InvocationLog).where(col(InvocationLog.function) == name))
            s.delete(fn)
            s.flush()
            still = set(s.exec(select(FunctionVersion.code_digest)
                               .where(col(FunctionVersion.code_digest).in_(digests))).all())
            still |= {d for d in s.exec(select(FunctionVersion.layer_digest)
                                        .where(col(FunctionVersion.layer_digest).in_(digests))).all() if d}
            unused = sorted(digests - still)
            s.exec(delete(CodeArtifact).where(col(CodeArtifact.digest).in_(unused)))
            return unused

    def functions_marker(self) -> tuple[int, float]:
        """(number of functions, last change): changes when any function is deployed or removed."""
        with self.session() as s:
            count, last = s.exec(select(func.count(), func.max(Function.updated_at))).one()
            return int(count), float(last or 0.0)

    # -- code artifacts --------------------------------------------------------------------------
    def put_artifact(self, digest: str, data: bytes) -> None:
        """Keep a code artifact (idempotent: a digest names its content)."""
        try:
            with self.session() as s:
                if not s.exec(select(CodeArtifact.digest).where(CodeArtifact.digest == digest)).first():
                    s.add(CodeArtifact(digest=digest, size=len(data), data=data))
        except IntegrityError:
            pass  # the same content, stored by a concurrent deploy

    def artifact(self, digest: str) -> bytes | None:
        """A code artifact's bytes, None if unknown."""
        with self.session() as s:
            return s.exec(select(CodeArtifact.data).where(CodeArtifact.digest == digest)).first()
