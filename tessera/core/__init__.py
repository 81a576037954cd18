"""The certificate authority itself: no HTTP, no SQL."""
