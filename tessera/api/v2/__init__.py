"""The native REST API (UCM dialect)."""
