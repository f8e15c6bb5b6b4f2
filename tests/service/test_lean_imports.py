"""The service starts on what it uses: building the app (SQLite, no RabbitMQ, no sign-in
provider) loads neither SQLAlchemy's ORM (the tables are Core) nor the PostgreSQL
dialect, the OIDC client or aio-pika. Each costs start-up time and memory in every
service process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def test_a_sqlite_service_app_loads_no_orm_postgresql_or_amqp(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from outpost.service.app import create_app
        from outpost.service.settings import ServiceSettings

        app = create_app(ServiceSettings(data_dir={str(tmp_path)!r}))
        assert app.routes
        loaded = sorted(sys.modules)
        for name in ("sqlalchemy.orm", "sqlalchemy.dialects.postgresql", "psycopg",
                     "aio_pika", "httpx", "alembic"):
            assert name not in sys.modules, name
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok"), out.stdout


def test_models_are_tables_with_column_attributes() -> None:
    from sqlalchemy import select

    from outpost.service.store.models import Base, Task, table

    assert table(Task) is Task.__table__ is Base.metadata.tables["tasks"]
    assert Task.status is Task.__table__.c.status
    sql = str(select(Task.id).where(Task.status == "waiting-for-ep"))
    assert "FROM tasks" in sql and "tasks.status" in sql


def test_result_rows_have_plain_str_keys() -> None:
    """Rows of Core selects over the tables have ``str`` keys, as the ORM's mapping gave
    them (not ``quoted_name``): msgspec's ``convert`` accepts only exact ``str`` keys."""
    import msgspec
    from sqlalchemy import create_engine, insert, select

    from outpost.service.store.models import Base, Identity, User, table

    for t in Base.metadata.tables.values():
        for c in t.columns:
            assert type(c.name) is str and type(c.key) is str, (t.name, c.name)
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(table(User)).values(id="u", username="a", created_at=1.0))
        conn.execute(insert(table(Identity)).values(id="i", user_id="u", username="a"))
        row = dict(conn.execute(select(Identity.id, Identity.username)).mappings().one())
    assert all(type(k) is str for k in row), row
    assert msgspec.convert(row, dict[str, str]) == {"id": "i", "username": "a"}
