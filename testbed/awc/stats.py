"""Small statistics of the AWC evaluations (numpy only, no executor imports, so `analysis` can use them):
the 95 % Student-t confidence interval of a mean over seeds, and paired relative differences."""

from __future__ import annotations

import math

import numpy as np

# two-sided 95 % Student-t quantiles by sample size n (n - 1 degrees of freedom); 1.96 beyond
_T95 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}


def ci95(x) -> float:
    """Half-width of the 95 % Student-t confidence interval of the mean of x (nan for fewer than 2 values)."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    if n < 2:
        return float("nan")
    return float(_T95.get(n, 1.96) * np.std(x, ddof=1) / math.sqrt(n))


def rel_pct(a, b) -> np.ndarray:
    """Element-wise 100 (a - b) / b, 0 where b is not positive (paired per seed: same requests and acceptance)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.where(b > 0, 100.0 * (a - b) / np.where(b > 0, b, 1.0), 0.0)
