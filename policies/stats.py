"""Percentiles: one definition for every number the project reports, from the simulator's
completion times to the benches' latencies and the demo's. It lives in the pure policy package
because the simulator may import nothing outside it; the connectors import it from here."""

from __future__ import annotations

import math
from typing import Sequence


def percentile(values: Sequence[float], q: float, *, presorted: bool = False,
               digits: int | None = None) -> float | None:
    """The ``q`` quantile (0 to 1) of ``values``, interpolated linearly between the two nearest
    ranks as numpy's default is; None when there are no values. ``presorted``: ``values`` are in
    ascending order already (a report taking several percentiles sorts once). ``digits``: rounded
    to that many decimals."""
    if not values:
        return None
    s = values if presorted else sorted(values)
    k = q * (len(s) - 1)
    lo, hi = math.floor(k), math.ceil(k)
    p = s[lo] + (s[hi] - s[lo]) * (k - lo)
    return p if digits is None else round(p, digits)
