"""Password hashes: argon2id (argon2-cffi); a hash made with older parameters is re-hashed at the next login.
Used by user administration (CLI and API) and by login."""
from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> tuple[bool, str | None]:
    """(ok, new hash to store if the parameters changed). `stored_hash` None: no such user — the password
    is still checked, against a hash made with the current parameters, so timing does not reveal usernames."""
    if stored_hash is None:
        try:
            _hasher.verify(_dummy_hash(), password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            pass
        return False, None
    try:
        _hasher.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, None
    return True, (_hasher.hash(password) if _hasher.check_needs_rehash(stored_hash) else None)


_dummy_hashes: dict[int, str] = {}


def _dummy_hash() -> str:
    """Made once per hasher (lazily: importing this module costs no hashing)."""
    if id(_hasher) not in _dummy_hashes:
        _dummy_hashes[id(_hasher)] = _hasher.hash("carepath-no-such-user")
    return _dummy_hashes[id(_hasher)]
