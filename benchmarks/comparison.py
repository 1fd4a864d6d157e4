"""How results are compared, shared by the report's tables and the reading's prose: one
method's seeds against another's (a gap only beyond the spread), what a summary is judged by,
and a front read at a given compression."""

from __future__ import annotations

import math
from typing import Any


def verdict(a: dict[str, Any], b: dict[str, Any], key: str = "test_error"
            ) -> tuple[float, float, str] | None:
  """(a's mean test error − b's, the spread, "leads", "trails" or "within the spread"): a gap
  is called one only when it exceeds the spread, the sum of the two seed stds (their one-std
  bands do not overlap). None without two seeds each. ``key``: another error's
  ``<key>_mean`` and ``<key>_std``."""
  if a.get(f"{key}_std") is None or b.get(f"{key}_std") is None:
    return None
  gap = a[f"{key}_mean"] - b[f"{key}_mean"]
  spread = a[f"{key}_std"] + b[f"{key}_std"]
  return gap, spread, ("within the spread" if abs(gap) <= spread else
                       "leads" if gap < 0 else "trails")


def metric(methods: dict[str, Any]) -> str:
  """What seeded points are compared by: a language model's test perplexity, else the test
  error."""
  return ("test_perplexity" if any(p.get("test_perplexity_mean") is not None
                                   for e in methods.values() for p in e.get("points", []))
          else "test_error")


def judged_by(summary: dict[str, Any]) -> tuple[str, str, int]:
  """(record key, column name, decimals) that a summary's tables and plot show: a language
  model's test perplexity per byte (its records' error is next-byte error, not what it is judged
  by), else the test error in %."""
  text = metric(summary["methods"]) == "test_perplexity" or any(
      "test_perplexity" in r for e in summary["methods"].values() for r in e.get("front", []))
  return ("test_perplexity", "test perplexity", 3) if text else ("test_error", "test error %", 2)


def versus(methods: dict[str, Any], a: str, b: str, key: str = "test_error"
           ) -> list[tuple[Any, dict, dict, tuple]]:
  """Per target where methods ``a`` and ``b`` both have two seeds or more, in the targets'
  order: (target, a's point, b's point, verdict(a's, b's) on ``key``)."""
  points = {m: {p["knob_value"]: p for p in methods[m].get("points", [])} for m in (a, b)}
  pairs = [(value, points[a][value], points[b][value])
           for value in sorted(set(points[a]) & set(points[b]))]
  return [(value, pa, pb, found) for value, pa, pb in pairs
          if (found := verdict(pa, pb, key)) is not None]


# A published "115×" is the paper's 114.92×: a seeded target this near counts as its point.
PUBLISHED_TOLERANCE = 1.05


def against_published(methods: dict[str, Any], published: list[dict[str, Any]]
                      ) -> list[tuple[dict, str, dict, tuple]]:
  """Per published sparse point and per method with two seeds or more at a target within
  ``PUBLISHED_TOLERANCE`` of its compression counted on weights (as the papers count it), by
  compression: (published point, method id, its seeded point, verdict against
  the published error). A published figure has no spread: a gap is one beyond the seeds' std."""
  found = []
  for pub in sorted(published, key=lambda p: p["compression"]):
    if pub["compression"] <= 1:  # a dense point is no target
      continue
    for key, entry in methods.items():
      for point in entry.get("points", []):
        c = point.get("compression_weights_mean")
        if c is None or abs(math.log(c / pub["compression"])) >= math.log(PUBLISHED_TOLERANCE):
          continue
        word = verdict(point, {"test_error_mean": pub["error"], "test_error_std": 0.0})
        if word is not None:
          found.append((pub, key, point, word))
  return found


# A front point with over this many times its front's best error failed (e.g. 69% where the
# front's best is 1.3%): a straight line to it is no trade-off to read a published point on.
FAILED_FACTOR = 10.0


def failed(front: list[dict[str, Any]], row: dict[str, Any]) -> bool:
  return row["test_error"] > FAILED_FACTOR * min(r["test_error"] for r in front)


def error_at(front: list[dict[str, Any]], compression: float,
             counted: str = "compression") -> float | None:
  """The front's test error at ``compression``, linear in log compression between its two
  neighbouring points (None outside the front, no extrapolation, and next to a failed point);
  ``counted``: the rows' compression key (``"compression_weights"``: on weights only)."""
  rows = sorted((r for r in front if r.get(counted) is not None),
                key=lambda r: (r[counted], r["test_error"]))
  for r0, r1 in zip(rows, rows[1:]):
    (c0, e0), (c1, e1) = ((r[counted], r["test_error"]) for r in (r0, r1))
    if c0 <= compression <= c1:
      if failed(front, r0) or failed(front, r1):
        return None
      w = 0.0 if c1 == c0 else math.log(compression / c0) / math.log(c1 / c0)
      return e0 + w * (e1 - e0)
  return next((r["test_error"] for r in rows
               if r[counted] == compression and not failed(front, r)), None)


def x(compression: float) -> str:
  """Three significant digits: 1.16× and 313× alike (one decimal hid 1.03 against 1.16)."""
  return f"{compression:.3g}"
