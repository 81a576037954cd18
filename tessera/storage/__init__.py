"""Persistence: SQLAlchemy models, repositories (the only place that queries), migrations."""
