"""Opening a PKCS#12 file in a child process whose CPU time is limited.

A file names the cost of its own password-based key derivations, and `kdf_cost` refuses one
asking too much before it is opened, but it cannot see a shrouded key bag inside an
encrypted SafeContents: that one's iteration count is itself encrypted. Whoever sends the
file knows the password, so OpenSSL would decrypt the outer part and then pay the inner
derivation in full (2^31 iterations: minutes of one core per request, open to anyone who
may decode a certificate). So the file is opened in a child process (from a forkserver:
a clean single-threaded parent, not a fork of a server process whose other threads may hold
locks) whose CPU time is capped; the key and certificates come back as DER. A process opens
at most AT_ONCE files at a time, so that costly files sent together cannot take every core
(each request thread would otherwise start a child of its own).
"""

import multiprocessing
import resource
import threading
from multiprocessing.connection import Connection

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from tessera.core.errors import InvalidInput, Unavailable

# Above what a file near kdf_cost's bound costs (4,000,000 iterations: ~3 s here; files made
# with usual settings take milliseconds), far below what an unbounded one can.
CPU_SECONDS = 5
WALL_SECONDS = 4 * CPU_SECONDS  # the child may wait for a core behind the server's threads
TOO_COSTLY = (
    f"the PKCS#12 file takes more than {CPU_SECONDS} s of CPU to open (a key derivation with "
    "too many iterations inside its encrypted contents)"
)

AT_ONCE = 2
BUSY = "too many PKCS#12 files are being opened at once; send this one again shortly"
_opening = threading.BoundedSemaphore(AT_ONCE)

Opened = tuple[bytes | None, bytes | None, list[bytes]]  # key (PKCS#8), certificate, others

# What cryptography raises for bytes it cannot read; several of its classes are no ValueError.
UNREADABLE: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    OverflowError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)

_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload([__name__])


class Unreadable(ValueError):
    """OpenSSL could not open the file with this password (or it is no PKCS#12 file)."""


def load(data: bytes, password: bytes | None) -> Opened:
    # A file waits at most as long as one costly file can take; past that the server is busy.
    if not _opening.acquire(timeout=WALL_SECONDS):
        raise Unavailable(BUSY)
    try:
        return _load(data, password)
    finally:
        _opening.release()


def _load(data: bytes, password: bytes | None) -> Opened:
    receiver, sender = _context.Pipe(duplex=False)
    child = _context.Process(target=_open, args=(sender, data, password), daemon=True)
    child.start()
    sender.close()
    try:
        outcome = receiver.recv() if receiver.poll(WALL_SECONDS) else None
    except EOFError:  # killed by its CPU limit
        outcome = None
    finally:
        receiver.close()
        child.kill()
        child.join()
    if outcome is None:
        raise InvalidInput(TOO_COSTLY)
    if isinstance(outcome, str):
        raise Unreadable(outcome)
    return outcome


def _open(sender: Connection, data: bytes, password: bytes | None) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS + 1))
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password)
    except UNREADABLE as exc:  # told apart from a child killed by its CPU limit
        sender.send(str(exc) or type(exc).__name__)
        return
    key_der = None
    if key is not None:
        key_der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    sender.send((key_der, _der(cert) if cert else None, [_der(c) for c in extra]))


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)
