"""argon2id password hashing with OWASP's parameters (19 MiB, 2 passes, 1 lane)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, hash_len=32, salt_len=16)
MIN_LENGTH = 10
#: Verified against when the email is unknown, so both failures cost the same time.
_DUMMY_HASH = HASHER.hash("heartpi-timing-equaliser")


def hash_password(password: str) -> str:
    problem = password_problem(password)
    if problem:
        raise ValueError(problem)
    return HASHER.hash(password)


def password_problem(password: str) -> str:
    if len(password) < MIN_LENGTH:
        return f"password too short: use at least {MIN_LENGTH} characters"
    return ""


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when the password matches; always runs one argon2 verification."""
    try:
        return HASHER.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
