"""Ed25519 signing of adapter manifests, and the keyring of trusted trainer keys.

The signature covers every manifest field except the signature itself and the inline
payload; the payload is covered through its sha256, which the consumer recomputes. It also
covers the manifest's ``sequence`` (see :mod:`models.sequence`), so a replayed old manifest
cannot pass for a newer one.

>>> import tempfile
>>> from pathlib import Path
>>> d = Path(tempfile.mkdtemp())
>>> private, public = generate_keypair(d / "trainer")
>>> signer = Signer.from_pem(private.read_bytes())
>>> ring = Keyring.from_dir(d)
>>> signer.key_id in ring.keys
True
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from models.errors import AdapterRejected
from schemas.messages import AdapterManifest
from streamtune.core.errors import ConfigError
from streamtune.core.settings import Settings

_UNSIGNED_FIELDS = {"signature_b64", "payload_b64"}


def key_id_of(public: Ed25519PublicKey) -> str:
    """A short id derived from the key itself, so it cannot be claimed for another key."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def signing_payload(manifest: AdapterManifest) -> bytes:
    """The canonical bytes a signature covers.

    ``sequence`` and ``revert_to_base`` are signed when set; a manifest without them
    (signed before the fields existed) is covered by exactly the bytes it was signed over
    then, so it still verifies.
    """
    excluded = set(_UNSIGNED_FIELDS)
    if manifest.sequence == 0:
        excluded.add("sequence")
    if not manifest.revert_to_base:
        excluded.add("revert_to_base")
    fields = manifest.model_dump(mode="json", exclude=excluded)
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


@dataclass(frozen=True)
class Signer:
    """A trainer's private key."""

    private: Ed25519PrivateKey

    @classmethod
    def from_pem(cls, pem: bytes) -> Signer:
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"cannot read the signing key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError("the signing key is not an Ed25519 key")
        return cls(key)

    @property
    def key_id(self) -> str:
        return key_id_of(self.private.public_key())

    def sign(self, manifest: AdapterManifest) -> AdapterManifest:
        """The manifest with ``key_id`` and ``signature_b64`` filled in."""
        unsigned = manifest.model_copy(update={"key_id": self.key_id, "signature_b64": "-"})
        signature = self.private.sign(signing_payload(unsigned))
        return unsigned.model_copy(update={"signature_b64": base64.b64encode(signature).decode()})


@dataclass(frozen=True)
class Keyring:
    """Trusted public keys by key id. Several keys may be trusted at once, so keys rotate."""

    keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)

    @classmethod
    def from_dir(cls, directory: Path | None, extra_b64: str = "") -> Keyring:
        """Every ``*.pub`` PEM file in ``directory``, plus comma-separated raw base64 keys."""
        keys: dict[str, Ed25519PublicKey] = {}
        if directory is not None and directory.is_dir():
            for path in sorted(directory.glob("*.pub")):
                try:
                    key = serialization.load_pem_public_key(path.read_bytes())
                except ValueError as exc:
                    raise ConfigError(f"cannot read trusted key {path}: {exc}") from None
                if not isinstance(key, Ed25519PublicKey):
                    raise ConfigError(f"trusted key {path} is not an Ed25519 key")
                keys[key_id_of(key)] = key
        for item in filter(None, (part.strip() for part in extra_b64.split(","))):
            try:
                key = Ed25519PublicKey.from_public_bytes(base64.b64decode(item, validate=True))
            except ValueError as exc:
                raise ConfigError(
                    f"STREAMTUNE_TRUSTED_KEYS holds a bad key {item!r}: {exc}"
                ) from None
            keys[key_id_of(key)] = key
        return cls(keys)

    def verify(self, manifest: AdapterManifest) -> None:
        """Raise :class:`AdapterRejected` unless a trusted key signed exactly this manifest."""
        if not manifest.signature_b64 or manifest.signature_b64 == "-":
            raise AdapterRejected(
                "unsigned", f"adapter {manifest.task}/{manifest.version} carries no signature"
            )
        key = self.keys.get(manifest.key_id)
        if key is None:
            raise AdapterRejected(
                "unknown_key",
                f"adapter {manifest.task}/{manifest.version} is signed by key {manifest.key_id}, "
                f"which is not trusted (trusted: {', '.join(sorted(self.keys)) or 'none'})",
            )
        try:
            signature = base64.b64decode(manifest.signature_b64, validate=True)
            key.verify(signature, signing_payload(manifest))
        except (InvalidSignature, ValueError):
            raise AdapterRejected(
                "bad_signature", f"signature of {manifest.task}/{manifest.version} does not verify"
            ) from None


def verify_blob(manifest: AdapterManifest, blob: bytes, keyring: Keyring) -> None:
    """Raise :class:`AdapterRejected` unless ``blob`` is exactly what a trusted key signed:
    its size and sha256 match the manifest, and the manifest's signature verifies."""
    if len(blob) != manifest.size_bytes:
        raise AdapterRejected(
            "tampered", f"adapter is {len(blob)} bytes; the manifest says {manifest.size_bytes}"
        )
    digest = hashlib.sha256(blob).hexdigest()
    if digest != manifest.sha256:
        raise AdapterRejected(
            "tampered",
            f"sha256 {digest[:12]}... does not match the manifest's {manifest.sha256[:12]}...",
        )
    keyring.verify(manifest)


def generate_keypair(stem: Path) -> tuple[Path, Path]:
    """Write ``STEM.key`` (PKCS8 PEM, mode 0600) and ``STEM.pub``; return both paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    key_path, pub_path = stem.with_suffix(".key"), stem.with_suffix(".pub")
    if key_path.exists():
        raise ConfigError(f"{key_path} exists; refusing to overwrite a signing key")
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    pub_path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key_path, pub_path


def load_signer(settings: Settings) -> Signer:
    """The trainer's key: ``STREAMTUNE_SIGNING_KEY`` (PEM) or the key file."""
    if settings.signing_key is not None:
        return Signer.from_pem(settings.signing_key.get_secret_value().encode())
    path = settings.signing_key_file or settings.keys_dir / "trainer.key"
    if not path.exists():
        raise ConfigError(
            f"no signing key at {path}: run `streamtune keys generate` or set STREAMTUNE_SIGNING_KEY_FILE"
        )
    return Signer.from_pem(path.read_bytes())


def load_keyring(settings: Settings) -> Keyring:
    """Trusted keys from ``STREAMTUNE_TRUSTED_KEYS_DIR`` (default ``<cache>/keys/trusted``) and
    ``STREAMTUNE_TRUSTED_KEYS``."""
    return Keyring.from_dir(
        settings.trusted_keys_dir or settings.keys_dir / "trusted", settings.trusted_keys
    )
