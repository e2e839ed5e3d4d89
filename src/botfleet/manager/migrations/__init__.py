"""Alembic migrations of the manager's database (run by `botfleet migrate` / `serve`)."""
