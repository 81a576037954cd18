"""Use cases, one package per domain. Services never commit: the request owns the unit of work."""
