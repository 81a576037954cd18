"""The platform dialect (seed 004) under /api/v1: audit events and audit export."""
