"""Generate, hash, verify and classify htpasswd secrets. No Django here.

Apache verifies the stored hash on every request, so the bcrypt cost is a
per-request cost (about 2 ms at cost 5, 280 ms at cost 12). Generated
secrets carry 128+ bits of randomness, which makes a low cost safe: nobody
brute-forces a 128-bit secret, whatever the cost factor.
"""
from __future__ import annotations

import re
import secrets

import bcrypt as pyca_bcrypt
from passlib.context import CryptContext

BCRYPT_MAX_BYTES = 72
# 24 bytes = 192 bits, printed as 32 URL-safe characters.
GENERATED_SECRET_BYTES = 24

_B64 = r"[./0-9A-Za-z]"
# The hash formats we accept, with their exact shape. Only bcrypt is read by
# the registry's built-in htpasswd auth; Apache and nginx read them all.
HASH_FORMATS = {
    "bcrypt": re.compile(rf"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\${_B64}{{53}}"),
    "apr1-md5": re.compile(rf"\$apr1\${_B64}{{1,8}}\${_B64}{{22}}"),
    "SHA-1": re.compile(r"\{SHA\}[A-Za-z0-9+/]{27}="),
    "sha256-crypt": re.compile(rf"\$5\$(rounds=[0-9]+\$)?{_B64}{{0,16}}\${_B64}{{43}}"),
    "sha512-crypt": re.compile(rf"\$6\$(rounds=[0-9]+\$)?{_B64}{{0,16}}\${_B64}{{86}}"),
}

_verifier = CryptContext(schemes=["bcrypt", "apr_md5_crypt", "ldap_sha1", "sha256_crypt", "sha512_crypt"])


class PasswordError(ValueError):
    """A secret or a hash that cannot be used."""


def generate_secret() -> str:
    return secrets.token_urlsafe(GENERATED_SECRET_BYTES)


def check_secret(secret: str) -> str:
    if not secret:
        raise PasswordError("the password is empty")
    if "\x00" in secret:
        # bcrypt would hash it, but the C string Apache compares stops there.
        raise PasswordError("the password contains a NUL character")
    if len(secret.encode("utf-8")) > BCRYPT_MAX_BYTES:
        raise PasswordError(f"the password is longer than {BCRYPT_MAX_BYTES} bytes, which bcrypt cannot hash")
    return secret


def hash_secret(secret: str, rounds: int) -> str:
    """bcrypt with the ``$2y$`` prefix, which Apache, nginx and the registry accept.

    Straight through pyca/bcrypt rather than passlib: passlib adds about
    0.2 ms of Python per call (10% of a cost-5 hash) and holds the GIL for
    it, which limits the parallel speed-up of bulk imports. ``$2b$`` and
    ``$2y$`` are the same algorithm; only the prefix differs.
    """
    raw = pyca_bcrypt.hashpw(check_secret(secret).encode("utf-8"), pyca_bcrypt.gensalt(rounds, prefix=b"2b"))
    return "$2y$" + raw.decode("ascii")[4:]


def verify(secret: str, password_hash: str) -> bool:
    try:
        return _verifier.verify(secret, password_hash)
    except (ValueError, TypeError):
        return False


def hash_kind(password_hash: str) -> str | None:
    """Name the hash's format, or None if it is not one we accept."""
    return next((kind for kind, shape in HASH_FORMATS.items() if shape.fullmatch(password_hash)), None)


def normalize_hash(password_hash: str) -> tuple[str, str | None]:
    """Check an imported hash and return ``(hash to store, warning or None)``.

    ``$2b$`` is the same bcrypt as ``$2y$``; APR only verifies the latter
    natively, so it is stored as ``$2y$``. Raises PasswordError for formats
    we do not accept (plain text, crypt(3) DES, anything unknown).
    """
    kind = hash_kind(password_hash)
    if kind is None:
        raise PasswordError(
            "unsupported or malformed hash: use bcrypt ($2y$, $2a$, $2b$), $apr1$, {SHA}, $5$ or $6$"
        )
    if password_hash.startswith("$2b$"):
        password_hash = "$2y$" + password_hash[4:]
    warning = None
    if kind != "bcrypt":
        warning = f"{kind} hash: Apache accepts it, but the registry's built-in htpasswd auth reads bcrypt only"
    return password_hash, warning
