"""The OCSP responder: wire format, signers, pre-signed responses, management views."""
