"""What the generator (generate.py) and the outcome model (outcomes.py) both draw with: Poisson counts,
(day, minute) arithmetic, and the acute encounter codes and attributes."""
from __future__ import annotations

import math
import random

ENC_AE = "4525004"       # Emergency department patient visit
ENC_ADMIT = "32485007"   # Hospital admission
EMER, IMP, CONFIRMED = {"class": "EMER"}, {"class": "IMP"}, {"verification_status": "confirmed"}


def _plus(t: tuple[int, int], minutes: int) -> tuple[int, int]:
    total = t[0] * 1440 + t[1] + minutes
    return (total // 1440, total % 1440)


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, int(round(rng.gauss(lam, math.sqrt(lam)))))
    L, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= L:
            return k
        k += 1
