"""The bottom layer: settings, the database (engine, tables, clock), errors with their codes,
secrets and sealing, metrics. Nothing here imports any other part of the manager."""
