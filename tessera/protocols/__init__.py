"""Public protocol front ends (AIA now; CRL, OCSP, ACME and SCEP in their own issues)."""
