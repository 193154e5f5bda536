"""Scaling-ladder maths: efficiency per rung, serial fraction, speedup ceiling, break rung.

A *ladder* is throughput T(N) (samples/s) measured at N = 1, 2, 4 ... nodes or
ranks. Two kinds, two laws:

* **weak** scaling (fixed per-rank batch; the default): the work grows with N,
  Gustafson's law ``S(N) = N - s(N - 1)`` describes the scaled speedup, and
  there is no ceiling.
* **strong** scaling (fixed global batch): Amdahl's law
  ``S(N) = 1 / (s + (1 - s)/N)``, whose ceiling is ``1/s`` (a 95 %-parallel
  job never exceeds 20x however many nodes it gets).

In both, ``S(N) = T(N)/T(1)`` and the efficiency is ``E(N) = S(N)/N``.

Standard library only (no torch, no numpy): the control plane imports this to
judge ladders it collected from the nodes. Everything here is a pure function
of its arguments; results are frozen dataclasses.

Choices, and why:

* **The fit treats T(1) as a parameter**, not as exact. Both laws are linear in
  two coefficients once written for throughput: weak ``T(N) = a + b·N`` with
  ``a = T1·s``, ``b = T1·(1 - s)``; strong ``1/T(N) = a + b/N`` (time per
  sample) with ``a = s/T1``, ``b = (1 - s)/T1``. So ``s = a/(a + b)`` comes from
  a closed-form linear least-squares fit. Dividing every point by a measured
  T(1) instead would tilt the whole fit by the noise of that one point, and
  would make a ladder without an N=1 rung unusable.
* **Least squares on relative residuals** (each point weighted by the inverse
  square of its measured value): throughput noise is multiplicative (±3 % of
  whatever was measured), so unweighted residuals would let the largest rung
  dominate a weak fit and the smallest rung a strong one. For Amdahl this is
  the fit on 1/S (linear in 1/N) rather than on S, because it stays linear and
  closed-form; the weights make it measure the same relative error as a fit on
  S would.
  (Measured on seeded ±3 % noise, this beats both an unweighted fit and a
  one-parameter fit on S normalised by the measured T(1).) Expect weak fits to
  be noisier than strong ones: there s is about 1 - E(N), so ±3 % noise on T
  moves s by about ±0.02, while a strong 1..64 ladder pins s to about ±0.002.
* **s is clamped to [0, 1]** (constrained least squares, not a clipped result):
  super-linear points (E > 1, e.g. the data set starts to fit in cache) pull the
  unconstrained s below 0, which neither law can mean; the fit then reports
  ``s = 0`` with ``clamped=True`` and a note. Likewise a ladder whose throughput
  falls as N grows reports ``s = 1``.
* **No N=1 rung: the smallest rung is the reference**, and the result says so
  (``reference_n`` and a note): E(n0) = 1 by definition and
  ``E(N) = T(N)·n0 / (N·T(n0))``. A multi-node ladder measured in ranks
  usually starts at one node's worth of GPUs, so refusing it would throw away
  the common case. The fit still extrapolates T(1) and s.
* **Missing rungs** (``None`` or NaN throughput: the step did not run) are
  skipped and listed in ``skipped``; "the previous rung" in the drop test is
  then the previous *measured* one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

WEAK = "weak"
STRONG = "strong"
MODES = (WEAK, STRONG)

#: Efficiency above 1 by more than this counts as super-linear (float noise is not).
_SUPERLINEAR_EPS = 1e-9


@dataclass(frozen=True)
class Rung:
    """One measured step: ``throughput`` (samples/s) at ``n`` nodes or ranks."""

    n: int
    throughput: float


@dataclass(frozen=True)
class Ladder:
    """Measured rungs in increasing ``n``, the scaling mode and the rungs that are missing.

    Build it with :meth:`from_points`, which accepts ``None`` for a missing rung.
    """

    rungs: tuple[Rung, ...]
    mode: str = WEAK
    """``weak`` (fixed per-rank batch: Gustafson) or ``strong`` (fixed global batch: Amdahl)."""
    skipped: tuple[int, ...] = ()
    """Rungs that were planned but have no throughput; reported, never fitted."""
    unit: str = "samples/s"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        ns = [r.n for r in self.rungs]
        for rung in self.rungs:
            _check_n(rung.n)
            value = rung.throughput
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"N={rung.n}: throughput must be a number, got {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise ValueError(
                    f"N={rung.n}: throughput must be positive and finite, got {value!r}; "
                    "a rung that did not run is None"
                )
        if ns != sorted(set(ns)):
            raise ValueError(f"rungs must have distinct N in increasing order, got {ns}")
        for n in self.skipped:
            _check_n(n)
        overlap = sorted(set(ns) & set(self.skipped))
        if overlap:
            raise ValueError(f"N={overlap[0]} is both measured and skipped")

    @classmethod
    def from_points(
        cls,
        points: Mapping[int, float | None] | Iterable[tuple[int, float | None]],
        mode: str = WEAK,
        unit: str = "samples/s",
    ) -> Ladder:
        """A ladder from ``{N: throughput}`` or ``(N, throughput)`` pairs in any order.

        ``None`` or NaN marks a rung that did not run: it goes to ``skipped``.
        Raises ValueError on a repeated or non-positive N, or a throughput that
        is not a positive finite number.
        """
        pairs = list(points.items()) if isinstance(points, Mapping) else list(points)
        seen: set[int] = set()
        rungs: list[Rung] = []
        skipped: list[int] = []
        for n, value in pairs:
            _check_n(n)
            if n in seen:
                raise ValueError(f"N={n} appears more than once")
            seen.add(n)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                skipped.append(n)
            else:
                rungs.append(Rung(n, value))
        rungs.sort(key=lambda r: r.n)
        return cls(tuple(rungs), mode, tuple(sorted(skipped)), unit)

    @property
    def reference(self) -> Rung | None:
        """The rung efficiencies are relative to: N=1 when measured, else the smallest."""
        return self.rungs[0] if self.rungs else None


def _check_n(n: object) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"N must be a positive integer, got {n!r}")


@dataclass(frozen=True)
class RungResult:
    """One rung as judged: measured speedup and efficiency, and the fitted law's throughput."""

    n: int
    throughput: float
    speedup: float
    """``T(N)/T(ref)``; the usual S(N) when the reference is N=1."""
    efficiency: float
    """``speedup · ref / N``; 1 means perfect scaling, above 1 super-linear."""
    fitted_throughput: float | None = None
    """What the fitted law predicts at this N; None when there is no fit."""


@dataclass(frozen=True)
class LadderFit:
    """Everything :func:`fit_ladder` concludes from a ladder."""

    mode: str
    law: str
    """``gustafson`` (weak) or ``amdahl`` (strong)."""
    reference_n: int | None
    """The rung efficiencies are relative to (1 unless the ladder lacks N=1)."""
    rungs: tuple[RungResult, ...]
    skipped: tuple[int, ...]
    serial_fraction: float | None
    """Fitted s in [0, 1]; None when it could not be fitted (``reason`` says why)."""
    t1: float | None
    """Fitted throughput at N=1 (extrapolated when N=1 was not measured)."""
    ceiling: float | None
    """Strong scaling only: the largest speedup Amdahl allows, ``1/s``. None in weak
    mode (Gustafson's speedup has no bound) and when s = 0 (unbounded)."""
    r_squared: float | None
    """Of the fitted throughput against the measured one; None with fewer than 3 rungs
    (two points are always fitted exactly) or when every rung measured the same."""
    rms_relative_residual: float | None
    """Root mean square of ``(T - fitted T)/T`` over the rungs."""
    clamped: bool
    """The unconstrained fit wanted s outside [0, 1]."""
    break_n: int | None
    """First N whose efficiency breaks (see :func:`find_break`); None if it never does."""
    break_reason: str | None
    threshold: float | None
    max_drop: float | None
    reason: str | None = None
    """Why ``serial_fraction`` is None."""
    notes: tuple[str, ...] = ()
    """What a reader must know: reference rung, skipped rungs, super-linear points, clamping."""

    @property
    def efficiencies(self) -> dict[int, float]:
        """Measured efficiency per N."""
        return {r.n: r.efficiency for r in self.rungs}

    def predicted_speedup(self, n: int) -> float | None:
        """The fitted law's speedup over N=1 at ``n`` nodes (any n, measured or not)."""
        _check_n(n)
        if self.serial_fraction is None:
            return None
        if self.law == "amdahl":
            return amdahl_speedup(self.serial_fraction, n)
        return gustafson_speedup(self.serial_fraction, n)

    def predicted_efficiency(self, n: int) -> float | None:
        """``predicted_speedup(n) / n``."""
        speedup = self.predicted_speedup(n)
        return None if speedup is None else speedup / n

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)


def amdahl_speedup(s: float, n: int | float) -> float:
    """Amdahl's law: speedup of a fixed amount of work on ``n`` units, serial fraction s."""
    return 1.0 / (s + (1.0 - s) / n)


def gustafson_speedup(s: float, n: int | float) -> float:
    """Gustafson's law: scaled speedup when the work grows with ``n``, serial fraction s."""
    return n - s * (n - 1)


def efficiencies(ladder: Ladder) -> tuple[RungResult, ...]:
    """Speedup and efficiency of every measured rung against the reference rung."""
    ref = ladder.reference
    if ref is None:
        return ()
    out = []
    for rung in ladder.rungs:
        speedup = rung.throughput / ref.throughput
        out.append(RungResult(rung.n, rung.throughput, speedup, speedup * ref.n / rung.n))
    return tuple(out)


def find_break(
    rungs: Iterable[RungResult], threshold: float | None = 0.9, max_drop: float | None = None
) -> tuple[int | None, str | None]:
    """The first rung where efficiency breaks, and why; ``(None, None)`` if none does.

    A rung breaks when its efficiency is below ``threshold``, or when it fell by
    more than ``max_drop`` from the previous measured rung. Either test can be
    switched off with None. The reference rung (E = 1 by definition) never breaks.
    """
    _check_limits(threshold, max_drop)
    previous: RungResult | None = None
    for rung in rungs:
        if previous is not None:
            if threshold is not None and rung.efficiency < threshold:
                return rung.n, (
                    f"efficiency at N={rung.n} is {rung.efficiency:.3f}, below {threshold:g}"
                )
            drop = previous.efficiency - rung.efficiency
            if max_drop is not None and drop > max_drop:
                return rung.n, (
                    f"efficiency fell by {drop:.3f} from N={previous.n} "
                    f"({previous.efficiency:.3f}) to N={rung.n} ({rung.efficiency:.3f}), "
                    f"more than {max_drop:g}"
                )
        previous = rung
    return None, None


def _check_limits(threshold: float | None, max_drop: float | None) -> None:
    if threshold is not None and not threshold > 0:
        raise ValueError(f"threshold must be positive, got {threshold!r}")
    if max_drop is not None and not max_drop > 0:
        raise ValueError(f"max_drop must be positive, got {max_drop!r}")


@dataclass(frozen=True)
class _LinearFit:
    a: float
    b: float
    clamped: bool


def _fit_nonnegative(xs: list[float], ys: list[float], ws: list[float]) -> _LinearFit:
    """Weighted least squares ``y = a + b·x`` subject to ``a, b >= 0``.

    The loss is a convex quadratic, so when the free optimum leaves the
    quadrant the constrained one lies on an edge: a = 0 (line through the
    origin) or b = 0 (a constant); take the better edge.
    """
    sw = sum(ws)
    sx = sum(w * x for w, x in zip(ws, xs, strict=True))
    sy = sum(w * y for w, y in zip(ws, ys, strict=True))
    sxx = sum(w * x * x for w, x in zip(ws, xs, strict=True))
    sxy = sum(w * x * y for w, x, y in zip(ws, xs, ys, strict=True))
    det = sw * sxx - sx * sx
    if det > 0:
        a = (sxx * sy - sx * sxy) / det
        b = (sw * sxy - sx * sy) / det
        if a >= 0 and b >= 0:
            return _LinearFit(a, b, clamped=False)

    def loss(a: float, b: float) -> float:
        return sum(w * (y - a - b * x) ** 2 for w, x, y in zip(ws, xs, ys, strict=True))

    edges = [(0.0, max(0.0, sxy / sxx)), (max(0.0, sy / sw), 0.0)]
    a, b = min(edges, key=lambda ab: loss(*ab))
    return _LinearFit(a, b, clamped=True)


def _fit_law(ladder: Ladder) -> tuple[float, float, bool]:
    """``(s, T1, clamped)`` from at least two measured rungs (see the module docstring)."""
    ns = [float(r.n) for r in ladder.rungs]
    ts = [r.throughput for r in ladder.rungs]
    if ladder.mode == WEAK:
        # T(N) = T1·s + T1·(1 - s)·N, relative residuals: weight 1/T².
        fit = _fit_nonnegative(ns, ts, [1.0 / (t * t) for t in ts])
        total = fit.a + fit.b
        return fit.a / total, total, fit.clamped
    # 1/T(N) = s/T1 + (1 - s)/T1 · (1/N): Amdahl on time per sample, linear in 1/N;
    # the relative residual of 1/T is weighted by T².
    fit = _fit_nonnegative([1.0 / n for n in ns], [1.0 / t for t in ts], [t * t for t in ts])
    total = fit.a + fit.b
    return fit.a / total, 1.0 / total, fit.clamped


def fit_ladder(
    ladder: Ladder, threshold: float | None = 0.9, max_drop: float | None = None
) -> LadderFit:
    """Judge a ladder: efficiency per rung, fitted serial fraction, ceiling, break rung.

    ``threshold`` and ``max_drop`` define the break (:func:`find_break`). With
    fewer than two measured rungs there is nothing to fit: ``serial_fraction``
    is None and ``reason`` says so; efficiencies are still given.
    """
    _check_limits(threshold, max_drop)
    law = "gustafson" if ladder.mode == WEAK else "amdahl"
    rungs = efficiencies(ladder)
    ref = ladder.reference
    notes: list[str] = []
    if ref is not None and ref.n != 1:
        notes.append(
            f"no N=1 rung: efficiency is relative to N={ref.n} (E({ref.n}) = 1 by definition); "
            "T(1) and the serial fraction are extrapolated by the fit"
        )
    if ladder.skipped:
        notes.append(
            "skipped rungs without a measurement: N=" + ", ".join(str(n) for n in ladder.skipped)
        )
    superlinear = [r for r in rungs if r.efficiency > 1 + _SUPERLINEAR_EPS]
    if superlinear:
        notes.append(
            "super-linear: "
            + ", ".join(f"E({r.n}) = {r.efficiency:.3f}" for r in superlinear)
            + " (above what Amdahl or Gustafson can express)"
        )
    break_n, break_reason = find_break(rungs, threshold, max_drop)
    common = {
        "mode": ladder.mode,
        "law": law,
        "reference_n": ref.n if ref else None,
        "skipped": ladder.skipped,
        "break_n": break_n,
        "break_reason": break_reason,
        "threshold": threshold,
        "max_drop": max_drop,
    }
    if len(rungs) < 2:
        return LadderFit(
            rungs=rungs,
            serial_fraction=None,
            t1=None,
            ceiling=None,
            r_squared=None,
            rms_relative_residual=None,
            clamped=False,
            reason=f"fitting the serial fraction needs at least 2 measured rungs, got {len(rungs)}",
            notes=tuple(notes),
            **common,
        )

    s, t1, clamped = _fit_law(ladder)
    if clamped and s == 0.0:
        notes.append("serial fraction clamped at 0: the ladder scales at least linearly")
    elif clamped:
        notes.append("serial fraction clamped at 1: throughput does not grow with N")
    predict = amdahl_speedup if ladder.mode == STRONG else gustafson_speedup
    fitted = tuple(
        RungResult(r.n, r.throughput, r.speedup, r.efficiency, t1 * predict(s, r.n)) for r in rungs
    )
    ceiling = None
    if ladder.mode == STRONG:
        if s > 0:
            ceiling = 1.0 / s
        else:
            notes.append("no speedup ceiling: with s = 0 Amdahl's speedup is unbounded")
    return LadderFit(
        rungs=fitted,
        serial_fraction=s,
        t1=t1,
        ceiling=ceiling,
        r_squared=_r_squared(fitted),
        rms_relative_residual=math.sqrt(
            sum(((r.throughput - (r.fitted_throughput or 0.0)) / r.throughput) ** 2 for r in fitted)
            / len(fitted)
        ),
        clamped=clamped,
        notes=tuple(notes),
        **common,
    )


def _r_squared(rungs: tuple[RungResult, ...]) -> float | None:
    if len(rungs) < 3:
        return None
    mean = sum(r.throughput for r in rungs) / len(rungs)
    total = sum((r.throughput - mean) ** 2 for r in rungs)
    if total == 0:
        return None
    residual = sum((r.throughput - (r.fitted_throughput or 0.0)) ** 2 for r in rungs)
    return 1.0 - residual / total
