"""Versioned schema migrations (firstlight.migrations) on SQLite; tests/integration/test_postgres.py
runs the same functions on PostgreSQL (the ``new_database`` fixture swapped).

The legacy fixtures (tests/fixtures/legacy_stores/, made by its generate.py) are databases as the
code from before versions left them, one per historical shape; opening one with today's stores
must stamp it at the revision its shape matches, upgrade it in place and keep every row."""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, create_engine, inspect, select, text
from sqlalchemy.engine import Engine

from firstlight import migrations
from firstlight.auth import store as auth_store
from firstlight.curation import store as curation_store
from firstlight.ingestion import store as ingestion_store
from firstlight.training import store as training_store

FIXTURES = Path(__file__).parents[1] / "fixtures" / "legacy_stores"
SCHEMAS = {s.name: s for s in (ingestion_store.SCHEMA, auth_store.SCHEMA, training_store.SCHEMA, curation_store.SCHEMA)}
HEAD = {name: ScriptDirectory(str(s.folder)).get_current_head() for name, s in SCHEMAS.items()}

#: shape -> the revision each store of its database is at before the upgrade (None: no tables yet)
SHAPES = {
    "ingestion-f3f0d89": {"ingestion": "0001", "auth": None},
    "ingestion-99571e9": {"ingestion": "0002", "auth": None},  # API keys came in a parallel branch
    "ingestion-dad9814": {"ingestion": "0003", "auth": "0001"},
    "ingestion-d94866b": {"ingestion": "0004", "auth": "0001"},
    "ingestion-f3f0d89-then-d94866b": {"ingestion": "0004", "auth": "0001"},
    "training-61aad9d": {"training": "0001", "curation": None},
    "training-6bc2797": {"training": "0002", "curation": "0001"},
    "training-d94866b": {"training": "0003", "curation": "0001"},
    "training-61aad9d-then-d94866b": {"training": "0003", "curation": "0001"},
}
#: what a column added by a migration holds in the rows that were there before it (else NULL)
ADDED_DEFAULTS = {("apps", "embedding_model"): "", ("inputs", "regions"): None, ("dataset_rows", "regions"): None, ("jobs", "cancel_requested"): False}
#: tables an upgrade fills from the rows already there (the others it makes start empty)
BACKFILLED = {"dataset_row_concepts"}

NewDatabase = Callable[[], str]


@pytest.fixture
def new_database(tmp_path: Path) -> NewDatabase:
    """Makes an empty database and returns its URL."""
    n = itertools.count()
    return lambda: f"sqlite:///{tmp_path / f'db{next(n)}.sqlite'}"


def load(url: str, shape: str) -> None:
    """Fill the empty database at ``url`` with a legacy fixture."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.executescript((FIXTURES / f"{shape}.sqlite.sql").read_text())
        return
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in (FIXTURES / f"{shape}.postgresql.sql").read_text().splitlines():
            conn.exec_driver_sql(statement.replace("%", "%%"))
    engine.dispose()


def open_stores(kind: str, url: str) -> Engine:
    """Open the database as the services do (each store migrates its own tables)."""
    if kind == "ingestion":
        engine = ingestion_store.make_engine(url)
        auth_store.ApiKeyStore(engine)
        return engine
    engine = training_store.TrainingStore(url).engine
    curation_store.CurationStore(engine=engine)
    return engine


def rows(engine: Engine) -> dict[str, list[dict]]:
    """Every row of every table but the version tables, as reflected (JSON parsed)."""
    meta = MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        return {
            name: sorted((dict(r) for r in conn.execute(select(table)).mappings()), key=lambda r: json.dumps(r, default=str, sort_keys=True))
            for name, table in meta.tables.items()
            if not name.startswith("alembic_version")
        }


def revisions(engine: Engine, names: list[str]) -> dict[str, str | None]:
    with engine.connect() as conn:
        return {n: migrations.current_revision(conn, SCHEMAS[n]) for n in names}


@pytest.mark.parametrize("shape", SHAPES)
def test_a_legacy_store_is_stamped_and_upgraded_in_place(new_database: NewDatabase, shape: str, caplog: pytest.LogCaptureFixture) -> None:
    url = new_database()
    load(url, shape)
    engine = create_engine(url)
    before = rows(engine)
    insp = inspect(engine)
    assert {n: SCHEMAS[n].legacy_revision(insp) for n in SHAPES[shape]} == SHAPES[shape]
    assert not [t for t in insp.get_table_names() if t.startswith("alembic_version")]
    engine.dispose()

    kind = shape.split("-")[0]
    with caplog.at_level("INFO", logger="firstlight.migrations"):
        engine = open_stores(kind, url)
    assert revisions(engine, list(SHAPES[shape])) == {n: HEAD[n] for n in SHAPES[shape]}
    for name, legacy in SHAPES[shape].items():  # the log says what happened to each store
        said = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{name} store:")]
        stamped = [f"{name} store: made before versioned migrations, stamped at {legacy}"] if legacy else []
        upgraded = [f"{name} store: schema upgraded from {legacy or 'nothing'} to {HEAD[name]}"] if legacy != HEAD[name] else []
        assert said == stamped + upgraded, name
    for name in SHAPES[shape]:
        assert migrations.diff(engine, SCHEMAS[name]) == [], name
    after = rows(engine)
    assert any(before.values()), "the fixture holds rows"
    for table, old in before.items():
        assert len(after[table]) == len(old) <= 1, table
        if not old:  # a table the later code made in an older database
            continue
        kept = [{k: r[k] for k in old[0]} for r in after[table]]
        assert kept == old, table  # every value as it was
        for column in set(after[table][0]) - set(old[0]):
            assert after[table][0][column] == ADDED_DEFAULTS.get((table, column)), (table, column)
    assert all(not after[t] for t in set(after) - set(before) - BACKFILLED)  # tables the upgrade made are empty
    if "dataset_rows" in before:  # one (row, concept) pair per frozen concept
        row = before["dataset_rows"][0]
        assert sorted((r["input_id"], r["concept"]) for r in after["dataset_row_concepts"]) == [(row["input_id"], c) for c in sorted(row["concepts"])]

    # today's code reads and writes the upgraded data
    if kind == "ingestion":
        store = ingestion_store.MetadataStore(engine)
        assert store.get_app("app")["embedding_model"] in ("", "apps.embedding_model")  # type: ignore[index]
        row = store.get_inputs("app", ["inputs.id"])["inputs.id"]
        assert row.metadata == {"filename": "a.png"} and row.regions in ([], [("cat", 0.125, 0.25, 0.5, 0.75)])
        store.insert_app("app2", "second", "")
        assert store.get_app("app2")["embedding_model"] == ""  # type: ignore[index]
        keys = auth_store.ApiKeyStore(engine)
        key_row, _ = keys.create("app2", "ci")
        assert [k.id for k in keys.list("app2")] == [key_row.id]
    else:
        training = training_store.TrainingStore(url)
        assert training.get_job("jobs.id")["cancel_requested"] in (False, True)  # type: ignore[index]
        [frozen] = training.dataset_rows("app", "dataset_rows.dataset_id", "dataset_rows.version")
        assert frozen.concepts == ["cat", "dog"]
        assert training.dataset_rows_page("app", "dataset_rows.dataset_id", "dataset_rows.version", 0, 10, concepts=["dog"]) == ([frozen], 1)
        training.save_dataset("app", "ds", "v1", {"seed": 1}, [training_store.DatasetRow("a", ["cat"], 1, [])])
        assert training.dataset_rows("app", "ds", "v1") == [training_store.DatasetRow("a", ["cat"], 1, [])]
        curation = curation_store.CurationStore(engine=engine)
        curation.set_policy("app", {"threshold": 0.5})
        assert curation.policy("app") == {"threshold": 0.5}
        training.engine.dispose()
    engine.dispose()


def test_a_fresh_database_equals_the_stores_tables(new_database: NewDatabase) -> None:
    for kind, names in (("ingestion", ["ingestion", "auth"]), ("training", ["training", "curation"])):
        url = new_database()
        engine = open_stores(kind, url)
        assert revisions(engine, names) == {n: HEAD[n] for n in names}
        for name in names:  # alembic's autogenerate comparison: no difference
            assert migrations.diff(engine, SCHEMAS[name]) == [], name
        # one version table per store: stores sharing a database do not read each other's
        assert sorted(t for t in inspect(engine).get_table_names() if t.startswith("alembic_version")) == sorted(f"alembic_version_{n}" for n in names)
        engine.dispose()
        engine = open_stores(kind, url)  # opening again is a no-op
        assert revisions(engine, names) == {n: HEAD[n] for n in names}
        engine.dispose()


def test_the_comparison_sees_a_difference(new_database: NewDatabase) -> None:
    """The no-diff assertions above are not vacuous: a table the metadata has but the database
    lacks (and one that only the database has) show up."""
    url = new_database()
    engine = open_stores("ingestion", url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE index_watch"))
        conn.execute(text("CREATE TABLE stray (id INTEGER PRIMARY KEY)"))  # another store's: ignored
    found = migrations.diff(engine, SCHEMAS["ingestion"])
    assert [(d[0], d[1].name) for d in found] == [("add_table", "index_watch")]
    engine.dispose()


def test_a_database_from_newer_code_is_refused_by_name(new_database: NewDatabase) -> None:
    url = new_database()
    engine = open_stores("ingestion", url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version_ingestion SET version_num = '0999'"))
    with pytest.raises(RuntimeError, match=r"ingestion store's database is at schema revision '0999'"):
        ingestion_store.make_engine(url)
    auth_store.ApiKeyStore(engine)  # its neighbour's version is its own
    engine.dispose()


def test_each_store_downgrades_to_nothing_and_back(new_database: NewDatabase) -> None:
    """Every downgrade runs (a store's tables go, its neighbour's stay) and upgrading again
    gives the same tables."""
    for kind, names in (("ingestion", ["ingestion", "auth"]), ("training", ["training", "curation"])):
        url = new_database()
        engine = open_stores(kind, url)
        for name in names:
            migrations.downgrade(engine, SCHEMAS[name], "base")
            tables = set(inspect(engine).get_table_names())
            assert not tables & set(SCHEMAS[name].metadata.tables), name
            assert all(set(SCHEMAS[n].metadata.tables) <= tables for n in names if n != name)
            migrations.upgrade(engine, SCHEMAS[name])
            assert migrations.diff(engine, SCHEMAS[name]) == [], name
        engine.dispose()


def test_the_migrations_ship_with_the_package() -> None:
    """They are Python packages (versions/ too), so a wheel carries them without package-data."""
    from setuptools import find_packages

    found = set(find_packages(str(Path(__file__).parents[2] / "services")))
    for name in SCHEMAS:
        assert {f"firstlight.{name}.migrations", f"firstlight.{name}.migrations.versions"} <= found


def test_a_new_revision_is_generated_from_the_changed_tables(new_database: NewDatabase, tmp_path: Path) -> None:
    """``python -m firstlight.migrations new``: the revision it writes makes a database equal to
    the changed tables (on a copy of the auth store's migrations, with one column more)."""
    import shutil

    from sqlalchemy import Column, DateTime

    from firstlight.migrations.__main__ import check, new_revision

    assert check() == 0  # every store as it is: nothing to generate
    folder = tmp_path / "auth_migrations"
    shutil.copytree(SCHEMAS["auth"].folder, folder)
    metadata = MetaData()
    auth_store.api_keys.to_metadata(metadata).append_column(Column("last_used_at", DateTime(timezone=True), nullable=True))
    changed = migrations.Schema("auth", folder, metadata, SCHEMAS["auth"].legacy_revision)
    path = new_revision(changed, "api_keys.last_used_at: when a key was last used")
    assert path.name == "0002_api_keys_last_used_at_when_a_key_was.py"
    engine = create_engine(new_database())
    migrations.upgrade(engine, changed)
    assert migrations.diff(engine, changed) == []
    assert "last_used_at" in {c["name"] for c in inspect(engine).get_columns("api_keys")}
    migrations.downgrade(engine, changed, "0001")
    assert "last_used_at" not in {c["name"] for c in inspect(engine).get_columns("api_keys")}
    engine.dispose()


@pytest.mark.parametrize("shape", ["training-6bc2797", "training-d94866b"])
def test_curation_adopts_its_rows_from_a_legacy_training_database(new_database: NewDatabase, shape: str) -> None:
    """A stack from before versions (curation's tables unversioned in the training database, as
    that code left them) moves to curation's own store: its new database gets every row, and
    the training database is only read."""
    training_url = new_database()
    load(training_url, shape)
    source = create_engine(training_url)
    before = rows(source)
    store = curation_store.CurationStore(new_database())
    copied = curation_store.adopt_from_training_db(store, training_url)
    assert copied == {t.name: 1 for t in curation_store.TABLES}
    moved = rows(store.engine)
    for table in curation_store.TABLES:
        assert moved[table.name] == before[table.name], table.name
    assert store.policy("app") == {"table": "curation_policies", "n": 1}
    assert migrations.diff(store.engine, SCHEMAS["curation"]) == []
    assert rows(source) == before  # the training database is untouched
    assert curation_store.adopt_from_training_db(store, training_url) == {}  # once
    source.dispose()
    store.engine.dispose()
