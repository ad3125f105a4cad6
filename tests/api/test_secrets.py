"""Secrets at rest, in-process: a function's `secret_env` is sealed in the database and never shown
again; `env` values are shown to admins only; the data directory and the database Cumulus makes are
its owner's alone; a control plane with another key than the database's refuses to start."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import Api, error, serve
from cryptography.fernet import Fernet

from control_plane.api import current_user
from control_plane.core import Settings
from control_plane.identity import Principal, Role, SecretKeyError
from control_plane.platform import Platform

SECRET = "s3cr3t-value-never-shown"


def test_secret_env_is_sealed_and_never_shown(api: Api) -> None:
    resp = api.deploy("vault", env={"PLAIN": "visible"}, secret_env={"API_KEY": SECRET})
    assert resp.status_code == 201, resp.text
    got = api.client.get("/v1/functions/vault", headers=api.headers)
    assert SECRET not in got.text
    assert got.json()["config"]["secret_env"] == ["API_KEY"]
    assert got.json()["config"]["env"] == {"PLAIN": "visible"}  # an admin reads env values
    listed = api.client.get("/v1/functions", headers=api.headers)
    assert SECRET not in listed.text
    # At rest: nowhere in the database file, its WAL included.
    db = api.platform.settings.data_dir / "cumulus.db"
    for path in (db, db.with_name("cumulus.db-wal")):
        assert not path.exists() or SECRET.encode() not in path.read_bytes()
    # Opened only for what runs the function.
    _, version = api.platform.functions.latest("vault")
    assert version.config.environment() == {"PLAIN": "visible", "API_KEY": SECRET}


def test_env_values_are_hidden_from_a_principal_that_may_not_read_them(api: Api) -> None:
    assert api.deploy("shown", env={"GREETING": "hi"}).status_code == 201
    api.app.dependency_overrides[current_user] = lambda: Principal("reader", "default", Role.INVOKER)
    try:
        got = api.client.get("/v1/functions/shown", headers=api.headers).json()
        listed = api.client.get("/v1/functions", headers=api.headers).text
    finally:
        api.app.dependency_overrides.clear()
    assert got["config"]["env"] == {"GREETING": "(hidden)"}
    assert '"hi"' not in listed


@pytest.mark.parametrize("config", [
    {"name": "both", "env": {"K": "a"}, "secret_env": {"K": "b"}},
    {"name": "big", "env": {"A": "x" * 20_000}, "secret_env": {"B": "y" * 20_000}},
    {"name": "nul", "secret_env": {"K": "a\x00b"}},
])
def test_bad_secret_env_is_a_422_that_does_not_repeat_it(api: Api, config: dict[str, object]) -> None:
    err = error(api.deploy("x", config=json.dumps(config)), 422, "InvalidConfig")
    assert "y" * 100 not in err["message"] and "a\\x00b" not in err["message"]


def test_the_data_directory_and_database_are_the_owners_only(tmp_path: Path) -> None:
    for _ in serve(tmp_path / "fresh"):
        data = tmp_path / "fresh"
        assert data.stat().st_mode & 0o777 == 0o700
        assert (data / "cumulus.db").stat().st_mode & 0o777 == 0o600
        assert (data / "secret.key").stat().st_mode & 0o777 == 0o600
        assert (data / "admin.token").stat().st_mode & 0o777 == 0o600
        rows = sqlite3.connect(data / "cumulus.db").execute("SELECT value FROM clustersecret").fetchall()
        assert rows and all(value.startswith("sealed1:") for (value,) in rows)


def test_another_key_than_the_databases_refuses_to_start(tmp_path: Path) -> None:
    for _ in serve(tmp_path):
        pass
    other = Fernet.generate_key().decode()
    with pytest.raises(SecretKeyError, match="not the one this database"):
        Platform(Settings(data_dir=tmp_path, secret_key=other), use_provider=False)
    with pytest.raises(SecretKeyError, match="is not a key"):
        Platform(Settings(data_dir=tmp_path, secret_key="short"), use_provider=False)
    with pytest.raises(SecretKeyError, match="does not exist"):
        Platform(Settings(data_dir=tmp_path, secret_key_file=tmp_path / "missing.key"), use_provider=False)
    # The right key, given as a setting, opens it.
    key = (tmp_path / "secret.key").read_text().strip()
    Platform(Settings(data_dir=tmp_path, secret_key=key), use_provider=False).store.engine.dispose()
