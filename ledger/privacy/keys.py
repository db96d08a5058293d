"""The master key file and the keys derived from it (HKDF-SHA256, one purpose per key)."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MASTER_KEY_FILE = "master.key"
SIGNING_KEY_FILE = "signing.key"


def write_secret_file(path: Path, data: bytes) -> bool:
    """Create ``path`` with mode 0600 holding ``data``, all at once: written and synced under a
    temporary name, then hard-linked into place, so nobody ever reads a half-written key, and a
    file that already exists is never replaced. False if it already existed."""
    if path.exists():
        return False
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


class KeyFileUnreadable(Exception):
    """A key file in the data directory is damaged, or is not the key it is named for."""


class MasterKey:
    """The 256-bit secret in ``LEDGER_DATA_DIR/master.key`` that every other key derives from."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise ValueError("the master key must be 32 bytes")
        self._secret = secret
        self.made = False  # whether load_or_create made this key just now

    @classmethod
    def load_or_create(cls, data_dir: Path) -> MasterKey:
        """Load the master key, creating it (mode 0600) on first use."""
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = data_dir / MASTER_KEY_FILE
        made = write_secret_file(path, base64.b64encode(secrets.token_bytes(32)) + b"\n")
        try:
            key = cls(base64.b64decode(path.read_bytes().strip(), validate=True))
        except ValueError:  # (binascii.Error is one) not base64, or not 32 bytes
            raise KeyFileUnreadable(
                f"{path} is not a ledger master key (32 bytes in base64, as `ledger init` "
                f"wrote it): it is damaged or another file; put the backed-up "
                f"{MASTER_KEY_FILE} back") from None
        key.made = made
        return key

    def derive(self, purpose: str) -> bytes:
        """A 32-byte key for one purpose; different purposes give unrelated keys."""
        return HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=f"ledger/{purpose}".encode()
        ).derive(self._secret)

    @property
    def key_id(self) -> str:
        """A public fingerprint, stored in the database to catch a mismatched key file."""
        return self.derive("key-id/v1").hex()[:32]

    def at_rest_cipher_key(self) -> str:
        """The base64 key for eventsourcing's AESCipher over every stored event's state."""
        return base64.b64encode(self.derive("event-state/v1")).decode()

    def wrapping_key(self) -> bytes:
        """The key that wraps per-participant data keys."""
        return self.derive("data-key-wrap/v1")


def ensure_signing_key(data_dir: Path) -> tuple[Path, bool]:
    """Create the Ed25519 key that signs checkpoints and reports (mode 0600), once. Returns its
    path, and whether this call created it (of processes starting together, exactly one)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = data_dir / SIGNING_KEY_FILE
    if not path.exists():
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return path, write_secret_file(path, pem)
    return path, False
