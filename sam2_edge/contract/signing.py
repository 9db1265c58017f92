"""Bundle signatures: who made a bundle, not only whether it is intact.

A bundle's `manifest.json` records the sha256 of every graph and data file, so one Ed25519
signature over the manifest's exact bytes covers the whole bundle. It is stored beside it as
`manifest.sig` (JSON: format, algorithm, key id, base64 signature). `sam2-edge keygen` makes a
key pair (PEM files), `sam2-edge export --sign KEY` signs, and `Tracker.from_bundle(dir,
trusted_keys=[...])` refuses a bundle that no trusted key signed. The cryptography is the
`cryptography` package's Ed25519 (imported when a key is used, so the rest of the contract
stays standard-library only); nothing here is hand-written crypto.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Dict, Iterable, Union

from ..errors import BackendUnavailableError, BundleError, ConfigError

SIGNATURE_FORMAT = "sam2-edge-signature/1"
ALGORITHM = "ed25519"
KeySource = Union[str, os.PathLike, bytes]


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise BackendUnavailableError("bundle signatures need the cryptography package: "
                                      "pip install cryptography") from None
    return ed25519, serialization, InvalidSignature


def key_id(public_key) -> str:
    """A short fingerprint of a public key: the first 16 hex digits of sha256(raw key)."""
    _, serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_key(private_path: KeySource) -> Dict[str, str]:
    """Write a new Ed25519 key pair: PRIVATE (PKCS#8 PEM, mode 0600) and PRIVATE.pub (PEM).
    Refuses to overwrite an existing file. -> {"private": path, "public": path, "key_id": id}."""
    ed25519, serialization, _ = _crypto()
    priv_path = Path(os.fsdecode(private_path))
    pub_path = Path(str(priv_path) + ".pub")
    for p in (priv_path, pub_path):
        if os.path.lexists(p):
            raise ConfigError(f"{p} already exists; keygen never overwrites a key. Choose another path")
    if not priv_path.parent.is_dir():
        raise ConfigError(f"folder {str(priv_path.parent)!r} does not exist; create it first")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub = key.public_key()
    with open(pub_path, "xb") as f:
        f.write(pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return {"private": str(priv_path), "public": str(pub_path), "key_id": key_id(pub)}


def _pem(source: KeySource, what: str) -> bytes:
    if isinstance(source, bytes):
        return source
    path = Path(os.fsdecode(source))
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {what} {str(path)!r}: {e.strerror}") from None
    if len(data) > 64 << 10:
        raise ConfigError(f"{what} {str(path)!r} is not a PEM key (too large)")
    return data


def load_private_key(source: KeySource):
    ed25519, serialization, _ = _crypto()
    try:
        key = serialization.load_pem_private_key(_pem(source, "private key"), password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{source!r:.80} is not an unencrypted PEM private key ({e}); make one with "
                          "`sam2-edge keygen KEY`") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{source!r:.80} is not an Ed25519 key; make one with `sam2-edge keygen KEY`")
    return key


def load_public_key(source: KeySource):
    ed25519, serialization, _ = _crypto()
    try:
        key = serialization.load_pem_public_key(_pem(source, "public key"))
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{source!r:.80} is not a PEM public key ({e}); give the KEY.pub file that "
                          "`sam2-edge keygen KEY` wrote") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ConfigError(f"{source!r:.80} is not an Ed25519 public key")
    return key


def sign_manifest(manifest_bytes: bytes, private_key: KeySource) -> bytes:
    """The `manifest.sig` content signing these exact manifest bytes."""
    key = load_private_key(private_key)
    sig = key.sign(manifest_bytes)
    doc = {"format": SIGNATURE_FORMAT, "algorithm": ALGORITHM, "key_id": key_id(key.public_key()),
           "signature": base64.b64encode(sig).decode("ascii")}
    return (json.dumps(doc, indent=1) + "\n").encode("utf-8")


def verify_manifest(manifest_bytes: bytes, signature: bytes, trusted_keys: Iterable[KeySource]) -> str:
    """Check `signature` (manifest.sig content) over `manifest_bytes` against the trusted
    public keys. -> the key id that signed; BundleError when it is malformed, made by a key
    that is not trusted, or does not match the manifest."""
    _, _, InvalidSignature = _crypto()
    keys = {}
    for k in trusted_keys:
        pub = load_public_key(k)
        keys[key_id(pub)] = pub
    if not keys:
        raise ConfigError("trusted_keys is empty: give at least one public key (KEY.pub from `sam2-edge keygen`)")
    try:
        doc = json.loads(signature.decode("utf-8"))
        kid, alg, fmt = doc["key_id"], doc["algorithm"], doc["format"]
        sig = base64.b64decode(doc["signature"], validate=True)
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError):
        raise BundleError("manifest.sig is malformed; the bundle's signature cannot be checked. Do not use this "
                          "bundle; ask its maker for a correctly signed copy.") from None
    if fmt != SIGNATURE_FORMAT or alg != ALGORITHM:
        raise BundleError(f"manifest.sig uses {fmt!r}/{alg!r}; this sam2-edge checks {SIGNATURE_FORMAT}/{ALGORITHM}")
    if kid not in keys:
        raise BundleError(f"the bundle is signed by key {kid!r:.40}, which is not one of the trusted keys "
                          f"({', '.join(sorted(keys))}); do not use it, or add its maker's public key")
    try:
        keys[kid].verify(sig, manifest_bytes)
    except InvalidSignature:
        raise BundleError(f"the bundle's signature (key {kid}) does not match its manifest: the manifest was "
                          "changed after signing. Do not use this bundle.") from None
    return kid


__all__ = ["generate_key", "sign_manifest", "verify_manifest", "load_public_key", "load_private_key", "key_id",
           "SIGNATURE_FORMAT"]
