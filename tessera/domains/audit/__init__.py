"""Audit: the chained audit log, its queries, retention and syslog forwarding.

`record` is what every service calls; it stays importable as `tessera.domains.audit.record`."""

from tessera.domains.audit.recording import event, record

__all__ = ["event", "record"]
