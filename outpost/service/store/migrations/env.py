"""Alembic environment: run against the connection handed over by ``db.migrate``."""

from alembic import context
from sqlalchemy import create_engine

from outpost.service.store.models import Base

config = context.config
target_metadata = Base.metadata

connection = config.attributes.get("connection")
if connection is None:  # `alembic` run by hand, e.g. to write a new revision
    url = config.get_main_option("sqlalchemy.url") or "sqlite:///outpost-dev.db"
    with create_engine(url).connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
