"""Receipt signing keys: HMAC-SHA256 or Ed25519, and the one place the configured key is read.

:func:`configured_signer` is how every writer (the CLI, the worker, the HTTP API, a script that
calls ``Harness.open()``) finds the signing key, so either all of them sign or none do:

1. an explicit key file (``holdfast worker --sign-key FILE``, ``Harness.open(signer=...)``),
2. else the file named by ``HOLDFAST_RECEIPT_KEY``,
3. else ``<holdfast home>/receipt.key`` when it exists (``holdfast receipts keygen`` writes it),
4. else no key: receipts are hash-chained but unsigned.

A key that is configured but cannot be read is an error, never a silent fall back to unsigned.
A key file holds a PEM Ed25519 key (private: signs and verifies; public: verifies only) or an
HMAC secret of at least 16 bytes (whoever verifies with it can also sign).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from holdfast.config import receipt_key_path
from holdfast.errors import ConfigError

log = logging.getLogger("holdfast.harness.signing")

_HEX = frozenset("0123456789abcdef")


class Signer(Protocol):
    """Signs and checks hex digests (receipt hashes, head and anchor digests)."""

    @property
    def key_id(self) -> str: ...

    @property
    def can_sign(self) -> bool: ...

    def sign(self, digest: str) -> str: ...

    def verify(self, digest: str, sig: str) -> bool: ...


def _is_hex(value: object, length: int | None = None) -> bool:
    return (
        isinstance(value, str)
        and bool(value)
        and (length is None or len(value) == length)
        and set(value) <= _HEX
    )


@dataclass(frozen=True)
class HMACSigner:
    """HMAC-SHA256 with a shared secret: whoever verifies can also sign."""

    secret: bytes = field(repr=False)
    key_id: str = ""

    def __post_init__(self) -> None:
        if not self.key_id:
            tag = hashlib.sha256(b"holdfast receipt key id\x00" + self.secret).hexdigest()[:16]
            object.__setattr__(self, "key_id", f"hmac:{tag}")

    @property
    def can_sign(self) -> bool:
        return True

    def sign(self, digest: str) -> str:
        return hmac.new(self.secret, digest.encode("utf-8"), hashlib.sha256).hexdigest()

    def verify(self, digest: str, sig: str) -> bool:
        # anything that is not a 64-digit hex string (a stored value may be anything) is invalid
        if not _is_hex(sig, 64) or not isinstance(digest, str):
            return False
        return hmac.compare_digest(self.sign(digest), sig)


class Ed25519Signer:
    """Ed25519: workers sign with the private key; auditors verify with the public key alone."""

    def __init__(self, private_key: Any = None, public_key: Any = None, key_id: str = "") -> None:
        if private_key is None and public_key is None:
            raise ConfigError("an Ed25519 signer needs a private or a public key")
        self._private = private_key
        self._public = public_key if public_key is not None else private_key.public_key()
        self.key_id = key_id or "ed25519:" + self._fingerprint()

    def __repr__(self) -> str:
        return f"Ed25519Signer(key_id={self.key_id!r}, can_sign={self.can_sign})"

    @classmethod
    def generate(cls) -> Ed25519Signer:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(Ed25519PrivateKey.generate())

    @property
    def can_sign(self) -> bool:
        return self._private is not None

    def public_only(self) -> Ed25519Signer:
        """The same key without its private half (what an auditor holds)."""
        return Ed25519Signer(public_key=self._public)

    def _fingerprint(self) -> str:
        from cryptography.hazmat.primitives import serialization

        raw = self._public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return hashlib.sha256(raw).hexdigest()[:16]

    def sign(self, digest: str) -> str:
        if self._private is None:
            raise ConfigError(
                f"the receipt key {self.key_id} is a public key: it can verify receipts, not "
                "sign them; give writers the private key"
            )
        return str(self._private.sign(digest.encode("utf-8")).hex())

    def verify(self, digest: str, sig: str) -> bool:
        from cryptography.exceptions import InvalidSignature

        if not _is_hex(sig, 128) or not isinstance(digest, str):
            return False
        try:
            self._public.verify(bytes.fromhex(sig), digest.encode("utf-8"))
        except (InvalidSignature, ValueError):
            return False
        return True

    def private_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        if self._private is None:
            raise ConfigError(f"the receipt key {self.key_id} has no private half")
        return bytes(
            self._private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def public_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return bytes(
            self._public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def load_signer(path: str | os.PathLike[str]) -> Signer:
    """A signer from a key file: a PEM Ed25519 key (private or public), else an HMAC secret."""
    p = Path(path).expanduser()
    try:
        data = p.read_bytes()
        mode = p.stat().st_mode
    except OSError as exc:
        raise ConfigError(
            f"cannot read the receipt key {p}: {exc.strerror or exc}", path=str(p)
        ) from exc
    if b"-----BEGIN" in data:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import (
            Ed25519PrivateKey,
            Ed25519PublicKey,
        )

        try:
            if b"PRIVATE KEY" in data:
                key = serialization.load_pem_private_key(data, password=None)
                if isinstance(key, Ed25519PrivateKey):
                    _warn_if_shared(p, mode)
                    return Ed25519Signer(key)
            else:
                pub = serialization.load_pem_public_key(data)
                if isinstance(pub, Ed25519PublicKey):
                    return Ed25519Signer(public_key=pub)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"the receipt key {p} is not a readable PEM key: {exc}") from exc
        raise ConfigError(f"the receipt key {p} is a PEM key but not Ed25519")
    secret = data.strip()
    if len(secret) < 16:
        raise ConfigError(f"the HMAC receipt key in {p} is shorter than 16 bytes")
    _warn_if_shared(p, mode)
    return HMACSigner(secret)


def _warn_if_shared(path: Path, mode: int) -> None:
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "the receipt signing key %s can be read by other users (mode %o); chmod 600 it",
            path,
            stat.S_IMODE(mode),
        )


def configured_signer(
    explicit: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    home: str | os.PathLike[str] | None = None,
) -> Signer | None:
    """The receipt key every writer and verifier uses (see the module docstring), or None."""
    path = receipt_key_path(explicit, env=env, home=home)
    return None if path is None else load_signer(path)


def require_signing(signer: Signer | None) -> Signer | None:
    """``signer`` if it can sign (or None); a public-only key is refused for writing."""
    if signer is not None and not signer.can_sign:
        raise ConfigError(
            f"the configured receipt key {signer.key_id} is a public key: it verifies receipts "
            "but cannot sign them, so this process must not write; point "
            "HOLDFAST_RECEIPT_KEY at the private key (or unset it on read-only auditors)"
        )
    return signer


def generate_key(path: str | os.PathLike[str], kind: Literal["ed25519", "hmac"]) -> Signer:
    """Write a new key to ``path`` (mode 0600, never over an existing file); for Ed25519 the
    public half goes to ``path`` + ``.pub`` for auditors."""
    p = Path(path).expanduser()
    signer: Signer
    if kind == "ed25519":
        ed = Ed25519Signer.generate()
        data, signer = ed.private_pem(), ed
    else:
        secret = os.urandom(32).hex().encode("ascii")
        data, signer = secret + b"\n", HMACSigner(secret)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise ConfigError(f"{p} already exists; refusing to overwrite a receipt key") from exc
    except OSError as exc:
        raise ConfigError(f"cannot write the receipt key {p}: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    if isinstance(signer, Ed25519Signer):
        Path(f"{p}.pub").write_bytes(signer.public_pem())
    return signer
