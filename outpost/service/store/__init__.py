"""The service's durable store: SQLAlchemy models, Alembic migrations, queries."""
