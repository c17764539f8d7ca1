"""NHS number validation: 10 digits, the 10th a Modulus 11 check digit (NHS CfH technical note)."""
from __future__ import annotations

WEIGHTS = (10, 9, 8, 7, 6, 5, 4, 3, 2)


def check_digit(first_nine: str) -> int | None:
    """The check digit for nine digits, or None where the number can never be issued (check = 10)."""
    total = sum(int(d) * w for d, w in zip(first_nine, WEIGHTS))
    check = 11 - total % 11
    if check == 11:
        return 0
    if check == 10:
        return None
    return check


def normalise_nhs_number(raw: str) -> str:
    """Strip spaces/hyphens and validate; raise ValueError saying what is wrong."""
    digits = raw.replace(" ", "").replace("-", "")
    if not digits.isdigit() or len(digits) != 10:
        raise ValueError(f"NHS number {raw!r} must be 10 digits")
    if len(set(digits)) == 1:
        raise ValueError(f"NHS number {raw!r} is not valid (all digits identical)")
    expected = check_digit(digits[:9])
    if expected is None:
        raise ValueError(f"NHS number {raw!r} is not valid (no check digit exists for these nine digits)")
    if expected != int(digits[9]):
        raise ValueError(f"NHS number {raw!r} fails the Modulus 11 check (check digit should be {expected})")
    return digits


def is_valid_nhs_number(raw: str) -> bool:
    try:
        normalise_nhs_number(raw)
    except ValueError:
        return False
    return True


def make_nhs_number(prefix9: int) -> str | None:
    """A valid NHS number from nine leading digits, or None if those digits have no check digit."""
    nine = f"{prefix9:09d}"
    c = check_digit(nine)
    return None if c is None else nine + str(c)
