"""Fixtures shared by every tier."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from contract.motoserver import MotoServer
from helpers import RunningPlatform, docker_client, start_platform
from package_index import PackageIndex, sdist, wheel

from provisioners.net import free_port

# A credentials file `cumulus login` left on this machine must not steer the CLI under test (nor
# may a test write one there): every test, and every process it starts, gets its own config home.
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="cumulus-test-config-")

@pytest.fixture(scope="session")
def docker_engine() -> None:
    """A real Docker engine must answer (`make test` starts one)."""
    try:
        docker_client().ping()
    except Exception as exc:  # pragma: no cover - environment problem, reported clearly
        pytest.fail(f"no Docker engine: {exc}. Run the suite with `make test`, which starts one.")


@pytest.fixture(scope="session")
def package_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PackageIndex]:
    """A package index on 127.0.0.1 with the packages the build tests install (see `package_index.py`).

    - `tinylib` 1.0: a wheel that needs `srconly>=1`;
    - `srconly` 1.2: a source distribution only, built by its own in-tree backend;
    - `winonly` 1.0: a wheel for Windows only (no wheel for the runtime, no source).
    """
    index = PackageIndex(tmp_path_factory.mktemp("index"))
    index.add("tinylib", *wheel("tinylib", "1.0", {"tinylib.py": "def answer():\n    return 42\n"},
                                requires=("srconly>=1",)))
    index.add("srconly", *sdist("srconly", "1.2", {"srconly.py": "WHERE = 'built in the sandbox'\n"}))
    index.add("winonly", *wheel("winonly", "1.0", {"winonly.py": ""}, tag="cp311-cp311-win_amd64"))
    with index.serving():
        yield index


@pytest.fixture(scope="session")
def platform(docker_engine: None, package_index: PackageIndex,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    """One `cumulus up` (SQLite, one local node, the test package index) shared by the integration
    tests."""
    plat = start_platform(tmp_path_factory.mktemp("platform"), extra_env=package_index.pip_env())
    try:
        yield plat
    finally:
        plat.stop()


MOTO_SERVER = Path(sys.executable).with_name("moto_server")



@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """`moto_server -H 127.0.0.1 -p PORT`, up until the session ends; fake credentials in env."""
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(key, value)
    os.environ.pop("AWS_PROFILE", None)
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    server = MotoServer("127.0.0.1", port)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"moto_server exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                if requests.get(f"{server.endpoint_url}/moto-api/", timeout=1).status_code < 500:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"moto_server did not answer on port {port} within 30 s")
            time.sleep(0.1)
        yield server
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def moto_ec2(moto_server: MotoServer) -> object:
    """A boto3 EC2 client on the moto server."""
    import boto3

    return boto3.client("ec2", region_name=moto_server.region, endpoint_url=moto_server.endpoint_url)


@pytest.fixture(scope="session")
def moto_ami(moto_ec2: object) -> str:
    """An AMI id that moto knows (it ships a catalogue of fake images)."""
    images = moto_ec2.describe_images(Owners=["amazon"])["Images"]  # type: ignore[attr-defined]
    assert images, "moto returned no AMIs"
    return str(sorted(img["ImageId"] for img in images)[0])


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL server of Debian's packages (`make test` installs them), in a fresh cluster
    on 127.0.0.1 owned by the `postgres` user; yields a superuser URL for the server."""
    import glob
    import pwd

    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not bins:
        pytest.fail("PostgreSQL is not installed (apt-get install postgresql); `make test` installs it")
    bindir = Path(bins[-1])
    import shutil
    import tempfile

    # Not under pytest's temp folder: it is private to root, and the server runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="cumulus-pg-"))
    root.chmod(0o755)
    data, sock = root / "data", root / "sock"
    data.mkdir()
    sock.mkdir()
    pg = pwd.getpwnam("postgres")
    for path in (data, sock):
        os.chown(path, pg.pw_uid, pg.pw_gid)
    as_pg = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_pg, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                    "--no-sync"], check=True, capture_output=True, timeout=120)
    port = free_port()
    subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(sock / "pg.log"), "-w",
                    "-t", "60", "-o", f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off",
                    "start"], check=True, capture_output=True, timeout=120)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60, check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real NATS server with JetStream (Debian's `nats-server`, which `make test` installs) on
    127.0.0.1, storing in a fresh folder; yields its URL."""
    import shutil

    binary = shutil.which("nats-server")
    if binary is None:
        pytest.fail("nats-server is not installed (apt-get install nats-server); `make test` installs it")
    store = tmp_path_factory.mktemp("nats")
    port = free_port()
    with (store / "nats.log").open("wb") as log:
        proc = subprocess.Popen([binary, "-js", "-sd", str(store / "js"), "-a", "127.0.0.1", "-p", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while b"Server is ready" not in (store / "nats.log").read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"nats-server did not start: {(store / 'nats.log').read_text()[-2000:]}")
            time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture
def postgres_db(postgres_server: str) -> str:
    """A fresh, empty database on the test PostgreSQL server."""
    import uuid

    from sqlalchemy import create_engine, text

    name = f"t_{uuid.uuid4().hex[:10]}"
    engine = create_engine(f"{postgres_server}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return f"{postgres_server}/{name}"


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[object]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1: the relay functions' mail is sent through."""
    from smtp_relay import smtp_relay

    with smtp_relay() as relay:
        yield relay
