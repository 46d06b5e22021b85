"""PostgreSQL by URL (``postgresql+psycopg://``), against a real throwaway PostgreSQL server:

* the ingestion domain tests of tests/unit/test_ingestion_core.py, run again on PostgreSQL
  (same functions, the ``core`` fixture swapped for one on PostgreSQL);
* the schema migration tests of tests/unit/test_migrations.py (legacy stores upgraded in place,
  a fresh database equal to the stores' tables), again on PostgreSQL (``new_database`` swapped);
* the training store's tables and a dataset round trip;
* a real IngestionService process configured with FIRSTLIGHT_DATABASE_URL, beside the session
  stack: an upload through it becomes searchable, so its outbox publishes from PostgreSQL.

Skips when no PostgreSQL server binaries (initdb, pg_ctl) are installed.
"""

from __future__ import annotations

import glob
import importlib.util
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from firstlight import datasets, migrations
from firstlight.blobstore import LocalBlobStore
from firstlight.config import ImageLimits
from firstlight.ingestion import store as ingestion_store
from firstlight.ingestion.core import Ingestion
from firstlight.ingestion.store import MetadataStore, make_engine
from firstlight.ingestion.store import metadata as store_metadata
from firstlight.sdk import Firstlight, UploadItem
from firstlight.stack import free_port, wait_serving
from firstlight.training.store import DatasetRow, TrainingStore


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


INITDB, PG_CTL = _pg_bin("initdb"), _pg_bin("pg_ctl")
pytestmark = [pytest.mark.integration, pytest.mark.skipif(not (INITDB and PG_CTL), reason="missing tool: no PostgreSQL server binaries (make system-deps)")]


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL server on a free loopback port; yields ``postgresql+psycopg://…/`` (no db)."""
    import psycopg

    # Not under pytest's tmp dir: that is private to our user, and the server may run as another.
    root = Path(tempfile.mkdtemp(prefix="firstlight-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as the "postgres" user
        if shutil.which("runuser") is None:
            pytest.skip("missing tool: running as root without runuser (make system-deps)")
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    user = "postgres" if as_user else os.environ.get("USER", "postgres")
    port = free_port()

    def run(*cmd: str, timeout: float = 120) -> None:
        done = subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(cmd[:2])} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")

    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    base = f"postgresql+psycopg://{user}@127.0.0.1:{port}/"
    try:
        run(INITDB, "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8", "--no-sync")  # type: ignore[arg-type]
        run(PG_CTL, "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "-t", "120", "start", timeout=180)  # type: ignore[arg-type]
        with psycopg.connect(f"host=127.0.0.1 port={port} user={user} dbname=postgres", autocommit=True) as conn:
            for db in ("ingestion_core", "training", "service"):
                conn.execute(f"CREATE DATABASE {db}")
        yield base
    finally:
        subprocess.run([*as_user, PG_CTL, "-D", str(data), "-m", "immediate", "-w", "stop"], capture_output=True, timeout=60)  # type: ignore[list-item]
        shutil.rmtree(root, ignore_errors=True)


# -- the ingestion domain tests, again on PostgreSQL ----------------------------------------------

for _file in ("test_ingestion_core.py", "test_ingestion_regions.py", "test_migrations.py"):
    _spec = importlib.util.spec_from_file_location(f"_{_file[:-3]}_tests", Path(__file__).parents[1] / "unit" / _file)
    assert _spec and _spec.loader
    _unit = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = _unit
    _spec.loader.exec_module(_unit)
    for _name in dir(_unit):
        _fn = getattr(_unit, _name)
        # only the tests that run on the `core` store or a new database (the others are pure or SQLite-specific)
        _args = _fn.__code__.co_varnames[: _fn.__code__.co_argcount] if hasattr(_fn, "__code__") else ()
        if _name.startswith("test_") and (_file == "test_ingestion_core.py" or "core" in _args or "new_database" in _args):
            globals()[f"{_name}_on_postgres"] = _fn


@pytest.fixture
def core(postgres: str, tmp_path: Path) -> Ingestion:
    engine = make_engine(postgres + "ingestion_core")
    with engine.begin() as conn:  # empty tables per test, like the unit tests' fresh SQLite file
        for table in reversed(store_metadata.sorted_tables):
            conn.execute(table.delete())
    ing = Ingestion(MetadataStore(engine), LocalBlobStore(tmp_path / "blobs"), ImageLimits(max_batch_size=4))
    ing.create_app("app")
    return ing


_databases = itertools.count()


@pytest.fixture
def new_database(postgres: str):  # type: ignore[no-untyped-def]
    """Makes an empty PostgreSQL database and returns its URL (the migration tests' fixture)."""
    import psycopg

    def make() -> str:
        name = f"migrations_{next(_databases)}"
        with psycopg.connect(postgres.replace("postgresql+psycopg://", "postgresql://") + "postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return postgres + name

    return make


def test_replicas_starting_together_migrate_once(new_database) -> None:  # type: ignore[no-untyped-def]
    """Replicas opening one new database at once: the advisory lock makes one migrate and the
    others find it done (without it, the second CREATE TABLE fails)."""
    from concurrent.futures import ThreadPoolExecutor

    from alembic.script import ScriptDirectory

    url = new_database()
    with ThreadPoolExecutor(4) as pool:
        engines = list(pool.map(lambda _: make_engine(url), range(4)))
    with engines[0].connect() as conn:
        head = ScriptDirectory(str(ingestion_store.SCHEMA.folder)).get_current_head()
        assert migrations.current_revision(conn, ingestion_store.SCHEMA) == head
    for engine in engines:
        engine.dispose()


def test_training_store_on_postgres(postgres: str) -> None:
    store = TrainingStore(postgres + "training")
    rows = [DatasetRow("a", ["猫"], 1), DatasetRow("b", ["dog", "cat"], 2, [("dog", 0.1, 0.2, 0.3, 0.4)]), DatasetRow("c", ["cat"], 3, [])]
    store.save_dataset("app", "ds", "v1", {"seed": 1}, rows)
    assert store.latest_dataset("app", "ds")["version"] == "v1"  # type: ignore[index]
    assert sorted(store.dataset_rows("app", "ds", "v1"), key=lambda r: r.input_id) == rows


def test_ingestion_service_on_postgres(postgres: str, stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = stack.env_for("ingestion")
    port = free_port()
    env.update(
        FIRSTLIGHT_DATABASE_URL=postgres + "service",
        FIRSTLIGHT_DATA_DIR=str(tmp_path / "ingestion-pg"),
        FIRSTLIGHT_GRPC_PORT=str(port),
    )
    log = tmp_path / "ingestion-pg.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "firstlight.ingestion.main"], env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        wait_serving(f"127.0.0.1:{port}", 120, proc, log)
        addresses = {**stack.addresses, "ingestion": f"127.0.0.1:{port}"}
        with Firstlight.from_addresses(addresses, timeout_s=60) as client:
            client.create_app("pg-app")
            items = [UploadItem(data, [name], id=f"pg-{n}") for n, (_, name, data) in enumerate(datasets.animal_mnist(1, seed=2)[:4])]
            report = client.upload("pg-app", items)
            assert sorted(report.input_ids) == sorted(i.id for i in items) and not report.failures
            assert {i.id for i in client.list_inputs("pg-app")} == {i.id for i in items}
            client.wait_indexed("pg-app", 4, timeout=180)  # events published from PostgreSQL's outbox
            assert client.indexed_count("pg-app") == 4
    finally:
        proc.terminate()
        proc.wait(30)
