"""The KEK file in the data directory: reading it (with the master password when sealed),
and replacing it atomically so that a crash leaves either the old or the new file, never a
torn one."""

import os
from pathlib import Path

from tessera.config import Settings
from tessera.core.keystore import (
    Keyring,
    MasterPasswordError,
    dump_keyring,
    is_sealed,
    parse_keyring,
)


def master_password(settings: Settings) -> str | None:
    """From TESSERA_MASTER_PASSWORD, else the first line of TESSERA_MASTER_PASSWORD_FILE."""
    if settings.master_password is not None:
        return settings.master_password.get_secret_value() or None
    if settings.master_password_file is not None:
        try:
            text = settings.master_password_file.read_text(encoding="utf-8")
        except OSError as exc:  # a start must say which setting is wrong, not trace back
            path = settings.master_password_file
            reason = f"cannot read TESSERA_MASTER_PASSWORD_FILE {path}: {exc.strerror or exc}"
            raise MasterPasswordError(reason) from exc
        return text.splitlines()[0] if text.strip() else None
    return None


class KekFile:
    """A KeyringSource: `changed()` is one stat, so encryptors can ask before every use."""

    def __init__(self, path: Path, password: str | None) -> None:
        self.path = path
        self.password = password
        self._seen: tuple[int, int, int] | None = None

    def _stamp(self) -> tuple[int, int, int]:
        st = os.stat(self.path)
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def changed(self) -> bool:
        try:
            return self._stamp() != self._seen
        except OSError:
            return False

    def load(self) -> Keyring:
        # Marked as seen even if it cannot be opened here (sealed, no password): one attempt
        # per change of the file, not one per encryption.
        self._seen = self._stamp()
        return parse_keyring(self.path.read_bytes(), self.password)

    def sealed(self) -> bool:
        return is_sealed(self.path.read_bytes())

    def write(self, ring: Keyring, password: str | None) -> None:
        """Replace the file: write a temporary file, fsync, rename, fsync the directory."""
        content = dump_keyring(ring, password)
        tmp = self.path.with_name(self.path.name + ".new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, content)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        if password is not None:
            self.password = password


def kek_file(settings: Settings) -> KekFile:
    return KekFile(settings.kek_path, master_password(settings))
