"""HTTP adapters: thin endpoints over the domain services."""
