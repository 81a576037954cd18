"""When a certificate is due for renewal: from two thirds of its lifetime on. ACME's
renewal information (RFC 9773) opens its suggested window there, and SCEP takes a PKCSReq
sent again from then on as a renewal rather than a retry."""

from datetime import datetime


def renewal_opens(not_before: datetime, not_after: datetime) -> datetime:
    return not_before + (not_after - not_before) * 2 / 3
