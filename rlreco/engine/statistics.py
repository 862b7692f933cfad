"""Student-t confidence intervals and Welch's t-test over replicates, numpy and math only.

scipy is not a dependency of rlreco, so the Student-t distribution function is computed here
from the regularized incomplete beta function, evaluated with its continued fraction
(modified Lentz method, as in Numerical Recipes' ``betacf``); quantiles invert the
distribution function with a bracketed Newton iteration. Both agree with ``scipy.stats.t`` to
about 1e-12 (checked in the tests when scipy is installed). The functions are scalar: a sweep
summary calls them a few times per setting, far from any hot loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_EPS = 1e-15
_TINY = 1e-300
_MAX_TERMS = 500


def _beta_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (converges for x < (a+1)/(a+b+2))."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_TERMS + 1):
        m2 = 2 * m
        # even step
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        # odd step
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return h


def regularized_beta(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    # use the fraction where it converges fast; the symmetry I_x(a,b) = 1 - I_{1-x}(b,a) elsewhere
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def _t_tail(t: float, df: float) -> float:
    """Upper tail P(T > t) for t >= 0: I_{df/(df+t^2)}(df/2, 1/2) / 2, without cancellation."""
    return 0.5 * regularized_beta(0.5 * df, 0.5, df / (df + t * t))


def t_cdf(t: float, df: float) -> float:
    """Distribution function of Student's t with ``df > 0`` degrees of freedom."""
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = _t_tail(abs(t), df)
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Quantile (inverse distribution function) of Student's t, for 0 < p < 1 and df > 0."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile: p = {p} is not in (0, 1)")
    if p == 0.5:
        return 0.0
    if p > 0.5:
        return -t_quantile(1.0 - p, df)
    # solve P(T > x) = p for x > 0 in tail space, so tiny p keep their relative precision
    lo, hi = 0.0, 1.0
    while _t_tail(hi, df) > p:
        lo, hi = hi, hi * 2.0
    x = 0.5 * (lo + hi)
    log_norm = math.lgamma(0.5 * (df + 1)) - math.lgamma(0.5 * df) - 0.5 * math.log(df * math.pi)
    for _ in range(200):
        f = _t_tail(x, df) - p
        if f < 0:
            hi = x
        else:
            lo = x
        density = math.exp(log_norm - 0.5 * (df + 1) * math.log1p(x * x / df))
        step = x + f / density if density > 0 else math.nan
        # Newton step when it stays inside the bracket, bisection otherwise
        x_new = step if lo < step < hi else 0.5 * (lo + hi)
        if abs(x_new - x) <= 1e-15 * max(1.0, abs(x)):
            return -x_new
        x = x_new
    return -x


@dataclass(frozen=True)
class Interval:
    """Mean of replicate values with a two-sided Student-t confidence interval.

    ``low`` and ``high`` are NaN when fewer than two replicates are finite.
    """

    mean: float
    low: float
    high: float
    std: float
    n: int


def t_interval(values: np.ndarray, level: float = 0.95) -> Interval:
    """Mean and t-interval of replicate values (NaNs ignored).

    Parameters
    ----------
    values : ndarray of float64, shape (n_replicates,)
    level : float
        Confidence level, e.g. 0.95.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, math.nan, 1)
    std = float(x.std(ddof=1))
    half = t_quantile(0.5 + 0.5 * level, n - 1) * std / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, std, n)


def welch_test(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of Welch's unequal-variance t-test of equal means.

    NaN when either sample has fewer than two finite values. When both samples have zero
    variance the p-value is 0 if the means differ and 1 if they are equal.

    Parameters
    ----------
    a, b : ndarray of float64
        Replicate values of two settings.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if x.size < 2 or y.size < 2:
        return math.nan
    vx = float(x.var(ddof=1)) / x.size
    vy = float(y.var(ddof=1)) / y.size
    diff = float(x.mean() - y.mean())
    if vx + vy == 0.0:
        return 0.0 if diff != 0.0 else 1.0
    t = diff / math.sqrt(vx + vy)
    df = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
    return 2.0 * t_cdf(-abs(t), df)


def welch_difference(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> Interval:
    """Difference of means ``mean(a) - mean(b)`` with its Welch confidence interval.

    The interval uses the Welch-Satterthwaite degrees of freedom (the test of
    :func:`welch_test`); ``low`` and ``high`` are NaN when a sample has fewer than two finite
    values, and equal the difference when both have zero variance. ``std`` is the standard
    error of the difference and ``n`` the smaller sample size.

    Parameters
    ----------
    a, b : ndarray of float64
        Replicate values of two settings.
    level : float
        Confidence level, e.g. 0.95.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if x.size == 0 or y.size == 0:
        return Interval(math.nan, math.nan, math.nan, math.nan, 0)
    diff = float(x.mean() - y.mean())
    n = int(min(x.size, y.size))
    if x.size < 2 or y.size < 2:
        return Interval(diff, math.nan, math.nan, math.nan, n)
    vx = float(x.var(ddof=1)) / x.size
    vy = float(y.var(ddof=1)) / y.size
    if vx + vy == 0.0:
        return Interval(diff, diff, diff, 0.0, n)
    df = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
    se = math.sqrt(vx + vy)
    half = t_quantile(0.5 + 0.5 * level, df) * se
    return Interval(diff, diff - half, diff + half, se, n)
