"""System security: the key-encryption key (status, master password, rotation) and the
rate-limit policy the API manages."""
