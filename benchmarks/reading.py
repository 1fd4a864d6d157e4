"""docs/results/reading.md, rendered from its template and the results archive.

    python -m benchmarks.reading           # rewrite docs/results/reading.md
    python -m benchmarks.reading --check   # exit 1 if it differs from what would be written

The reading's prose is the team's; its figures are not typed: the template
(benchmarks/results/reading.template.md) names each one as a Jinja2 placeholder evaluated against
the archive that `python -m benchmarks.report --all` writes (benchmarks/results/sweeps/*.json, the
summaries, and *.trials.json, each trial's archived records). Each experiment's summary is a
variable named by its id:

    {{ lenet300100_mnist.methods.xrda.reference.test_error_mean | d(2) }}
    {{ front(lenet5_mnist.methods.gmp_erk, 0.99).compression | x }}
    {{ worse(at(x5, 111, "compression_weights"), 0.91) | d(2) }}

Export reports that `python -m train.export` wrote and the archive keeps
(benchmarks/results/export_<name>_report.json) are ``exports["<name>"]``.

A key, method or experiment the archive lacks raises ReadingError naming it and the template's
line; so does a `better`/`worse` whose direction the archive
contradicts, since the word around it would then be wrong. Figures the archive does not hold
(per-epoch histories it does not keep, a paper's own tables) are marked `unarchived("…")` or
`paper("…")` and counted by tests/test_reading.py.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import traceback
from pathlib import Path
from typing import Any

import jinja2

from benchmarks import comparison

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
TEMPLATE = RESULTS / "reading.template.md"
OUTPUT = REPO / "docs" / "results" / "reading.md"
HEADER = ("<!-- written by `python -m benchmarks.reading` (and `python -m benchmarks.report "
          "--all`) from benchmarks/results/reading.template.md and the archive; edits here are "
          "overwritten -->\n")


class ReadingError(Exception):
  """A placeholder the archive cannot answer (its message names the placeholder's path)."""


class Node:
  """A dict or list of the archive, read by attribute or index; a missing key raises
  ReadingError naming its path (Jinja2 would otherwise print an empty string for it)."""

  def __init__(self, value: Any, path: str):
    self._value, self._path = value, path

  def __getattr__(self, key: str) -> Any:
    if key.startswith("_"):  # copy, pickle and Jinja2's probes: no archive key starts so
      raise AttributeError(key)
    return self[key]

  def __getitem__(self, key: Any) -> Any:
    v = self._value
    if isinstance(v, dict) and key in v:
      return wrap(v[key], f"{self._path}.{key}")
    if isinstance(v, list) and isinstance(key, int) and -len(v) <= key < len(v):
      return wrap(v[key], f"{self._path}[{key}]")
    if isinstance(v, list) and isinstance(key, slice) and v[key]:
      return Node(v[key], f"{self._path}[{key.start}:{key.stop}]")
    have = sorted(v) if isinstance(v, dict) else f"{len(v)} items"
    raise ReadingError(f"{self._path}.{key}: not in the archive (it has {have})")

  def __iter__(self):
    items = self._value if isinstance(self._value, list) else list(self._value)
    return (wrap(x, f"{self._path}[{i}]") for i, x in enumerate(items))

  def __len__(self) -> int:
    return len(self._value)


def wrap(value: Any, path: str) -> Any:
  if isinstance(value, (dict, list)):
    return Node(value, path)
  if value is None:  # a figure the archive has no value for: never print it as "None"
    raise ReadingError(f"{path}: None in the archive")
  return value


def _raw(node: Any) -> Any:
  return node._value if isinstance(node, Node) else node  # pylint: disable=protected-access


def _path(node: Any) -> str:
  return node._path if isinstance(node, Node) else repr(node)  # pylint: disable=protected-access


def _close(a: float, b: float) -> bool:
  return math.isclose(float(a), float(b), rel_tol=1e-9)


# Lookups.

def front(method: Node, knob_value: Any) -> Node:
  """The method's seed-0 front row at ``knob_value`` (its λ, target sparsity, init scale...)."""
  for i, row in enumerate(_raw(method.front)):
    v = row["knob_value"]
    if v == knob_value or (isinstance(v, (int, float)) and isinstance(knob_value, (int, float))
                           and _close(v, knob_value)):
      return method.front[i]
  have = [r["knob_value"] for r in _raw(method)["front"]]
  raise ReadingError(f"{_path(method)}.front: no row at {knob_value!r} (it has {have})")


def at(method: Node, compression: float, counted: str = "compression") -> float:
  """The method's front read at ``compression`` (comparison.error_at: linear in log compression
  between its neighbouring points; ``counted="compression_weights"`` on weights only)."""
  e = comparison.error_at(_raw(method)["front"], float(compression), counted)
  if e is None:
    raise ReadingError(f"{_path(method)}.front: nothing to read at {compression}× ({counted}): "
                       "outside the front or next to a failed point")
  return e


def published(summary: Node, method: str, compression: float | None = None) -> Node:
  """The experiment's published point of ``method``; where it has several, the one within 5% of
  ``compression`` (a paper's 114.92× is its "115×" point)."""
  rows = [p for p in summary.published if p["method"] == method and (
      compression is None or abs(math.log(_raw(p)["compression"] / compression)) < math.log(1.05))]
  if len(rows) != 1:
    raise ReadingError(f"{_path(summary)}.published: {len(rows)} points of {method!r}"
                       + ("" if compression is None else f" at {compression}×"))
  return rows[0]


def versus(summary: Node, a: str, b: str) -> list[dict[str, Any]]:
  """Per target where methods ``a`` and ``b`` both have two seeds or more, in order: the
  target, its compression on weights, each one's test error (a language model's test
  perplexity: ``metric``) mean and std, a's minus b's, the spread and the word for it
  (comparison.verdict: "leads", "trails" or "within the spread", a's view). A method the summary
  lacks raises ReadingError."""
  methods = {key: _raw(summary.methods[key]) for key in (a, b)}
  metric = comparison.metric(methods)
  return [{"value": value, "compression_weights": pa["compression_weights_mean"],
           "seeds": sorted({*pa["seeds"], *pb["seeds"]}),
           "metric": metric, "a": pa[f"{metric}_mean"], "a_std": pa[f"{metric}_std"],
           "b": pb[f"{metric}_mean"], "b_std": pb[f"{metric}_std"],
           "gap": gap, "spread": spread, "word": word}
          for value, pa, pb, (gap, spread, word) in comparison.versus(methods, a, b, metric)]


def update_distance(summary: Node, sparse: str, dense: str, baseline: str) -> dict[str, Any] | None:
  """Where dense SGD (``dense``) lies between ``sparse``'s first target and a dense ``baseline``
  (AdamW), seed 0, on what the experiment is judged by (a language model's test perplexity, else
  the test error in %, lower better): ``s``, ``x``, ``a`` and ``case``: "further" (SGD no
  better than xrda: xrda's distance is its kind of update's), "reaches" (SGD at AdamW: the
  distance is xrda's own), "sgd" or "own" (nearer xrda or nearer AdamW), None where AdamW is not
  ahead of xrda; ``chosen``, dense's tuned rate, and ``compression_weights``, the target's. None
  until all three are archived."""
  raw = _raw(summary)
  methods = raw["methods"]
  key = comparison.judged_by(raw)[0]
  firsts = [(methods.get(k) or {}).get("front") or [] for k in (dense, sparse, baseline)]
  if not all(firsts):
    return None
  s, x, a = (f[0][key] for f in firsts)
  case = (None if a >= x else "further" if s >= x else "reaches" if s <= a
          else "sgd" if s - a > x - s else "own")
  return {"s": s, "x": x, "a": a, "case": case, "chosen": summary.methods[dense].tuned.chosen,
          "compression_weights": firsts[1][0]["compression_weights"]}


def at_published(summary: Node, *keys: str) -> list[dict[str, Any]]:
  """Per published point that is one of the targets (comparison.against_published: on weights,
  as its paper counts it), by compression: its method, compression, error and source,
  and ``rows``, the seeded ``keys`` there in the order given, each with its test error mean,
  std, difference from the published error and the word for it ("leads": lower beyond the
  seeds' std)."""
  found: dict[int, dict[str, Any]] = {}  # by the published point, in against_published's order
  for pub, key, point, (gap, _, word) in comparison.against_published(
      {k: _raw(summary.methods[k]) for k in keys}, _raw(summary.published)):
    entry = found.setdefault(id(pub), dict(pub, rows={}))
    entry["rows"][key] = {"a": point["test_error_mean"], "a_std": point["test_error_std"],
                          "gap": gap, "word": word}
  return [dict(entry, rows=[dict(entry["rows"][k], key=k) for k in keys if k in entry["rows"]])
          for entry in found.values()]


_TRIALS: dict[str, dict] = {}  # <experiment>.trials.json, read once per render


def _trials(summary: Node) -> dict[str, dict]:
  name = _raw(summary)["experiment"]
  if name not in _TRIALS:
    _TRIALS[name] = json.loads((RESULTS / "sweeps" / f"{name}.trials.json").read_text())
  return _TRIALS[name]


def _trial(summary: Node, row: Node) -> tuple[str, dict]:
  trial = _raw(row)["trial"]
  if trial not in _trials(summary):
    raise ReadingError(f"{_raw(summary)['experiment']}.trials.json: no trial {trial!r}")
  return f"{_raw(summary)['experiment']}.trials.json[{trial!r}]", _trials(summary)[trial]


def record(summary: Node, row: Node, epoch: int | None = None) -> Node:
  """The archived record of ``row``'s trial (<experiment>.trials.json): its last epoch's, or
  ``epoch``'s where the archive keeps it."""
  path, archived = _trial(summary, row)
  found = [r for r in archived.get("records", []) if epoch is None or r["epoch"] == epoch]
  if not found:
    raise ReadingError(f"{path}: no record" + ("" if epoch is None else f" at epoch {epoch}"))
  return Node(found[-1], f"{path}.epoch{found[-1]['epoch']}")


def config(summary: Node, row: Node, key: str) -> Any:
  """A setting ``row``'s trial trained with (its archived config overrides)."""
  path, archived = _trial(summary, row)
  return Node(archived["overrides"], f"{path}.overrides")[key]


def seeds(summary: Node, trial: str) -> Node:
  """Mean and std over the seeds of the archived trials named ``trial`` + "_seed=N" (a setting
  other than the tuned one, which the summary's reference covers): test_error_*, compression_*."""
  last = [r["records"][-1] for t, r in _trials(summary).items()
          if t.startswith(f"{trial}_seed=") and r.get("records")]
  path = f"{_raw(summary)['experiment']}.trials.json[{trial!r}_seed=*]"
  if len(last) < 2:
    raise ReadingError(f"{path}: {len(last)} seeds trained")
  errors = [100 * (1 - r["test_accuracy"]) for r in last]
  compressions = [r["compression"] for r in last]
  return Node({"seeds": len(last), "test_error_mean": statistics.fmean(errors),
               "test_error_std": statistics.stdev(errors),
               "compression_mean": statistics.fmean(compressions),
               "compression_std": statistics.stdev(compressions)}, path)


def kernels(rec: Node, *prefixes: str, key: str = "density") -> list[float]:
  """``key`` (density, nonzeros, total) of the record's kernels whose layer name starts with one
  of ``prefixes`` (all kernels without one)."""
  found = [s[key] for name, s in _raw(rec)["layers"].items()
           if name.endswith("/kernel") and (not prefixes or name.startswith(prefixes))]
  if not found:
    raise ReadingError(f"{_path(rec)}.layers: no kernel under {prefixes}")
  return found


def others(rec: Node) -> int:
  """The record's parameters outside kernels (biases, batch norm): never pruned."""
  return _raw(rec)["total"] - sum(kernels(rec, key="total"))


def kept(rec: Node, sparsity: float) -> float:
  """Kernel weights kept at ``sparsity`` (the budget a sparse-from-scratch method trains at)."""
  return sum(kernels(rec, key="total")) * (1 - sparsity)


def rda_threshold(l1: float, steps: int, gamma: float) -> float:
  """RDA's final soft threshold λ·sqrt(N)/γ after N steps."""
  return l1 * math.sqrt(steps) / gamma


def share(part: float, whole: float) -> float:
  """``part`` as a fraction of ``whole`` (format it with pct)."""
  return part / whole


def density(rec: Node, layer: str) -> float:
  return rec.layers[f"{layer}/kernel"].density


# Derived figures: a gap is a named helper whose direction is checked, so that a word of the
# prose ("better", "behind") cannot silently contradict the archive.

def better(a: float, b: float) -> float:
  """How much lower error ``a`` is than ``b`` (the prose says a is better, ahead)."""
  if a > b:
    raise ReadingError(f"the prose says {a:.4g} is better (lower) than {b:.4g}; it is not")
  return b - a


def worse(a: float, b: float) -> float:
  """How much higher error ``a`` is than ``b`` (the prose says a is worse, behind)."""
  if a < b:
    raise ReadingError(f"the prose says {a:.4g} is worse (higher) than {b:.4g}; it is not")
  return a - b


def trained(rows: Node) -> list[Node]:
  """The rows of trials that trained (a diverged one has no figures)."""
  return [row for i, row in enumerate(rows) if "diverged" not in _raw(rows)[i]]


def unarchived(text: str) -> str:
  """A figure the archive does not keep (a per-epoch history, a removed experiment): typed, and
  counted by the tests so that none is added unawares."""
  return text


def paper(text: str) -> str:
  """A paper's own figure beyond its published point (a layer density, a budget): typed."""
  return text


# Formats.

def _number(v: Any) -> float:
  if isinstance(v, Node) or isinstance(v, bool) or not isinstance(v, (int, float)):
    raise ReadingError(f"{_path(v)}: not a number")
  return v


def d(v: Any, digits: int = 2) -> str:
  """``digits`` decimals: 1.80 (0.00, not -0.00, for a difference that rounds to nothing)."""
  text = f"{_number(v):.{digits}f}"
  return text[1:] if text.startswith("-") and float(text) == 0 else text


def _sig(n: float, digits: int, zeros: bool = False) -> str:
  """``n`` to ``digits`` significant digits, never in exponent form; ``zeros`` keeps trailing
  zeros (2.0, not 2)."""
  if n == 0:
    return "0"
  decimals = digits - 1 - math.floor(math.log10(abs(n)))
  if zeros:
    return f"{n:.{max(decimals, 0)}f}"
  return f"{round(n, decimals):g}"


def signed(v: Any, digits: int = 2) -> str:
  """A difference with its sign: "+0.03", "-0.13", "0.00"."""
  text = d(v, digits)
  return text if text.startswith("-") or float(text) == 0 else "+" + text


def seed_span(verdicts: list[dict[str, Any]]) -> str:
  """The seeds behind ``versus``'s verdicts: "1-3" where consecutive, else "1, 3"."""
  found = sorted({s for v in verdicts for s in v["seeds"]})
  if len(found) > 1 and found == list(range(found[0], found[-1] + 1)):
    return f"{found[0]}-{found[-1]}"
  return ", ".join(map(str, found))


def g(v: Any, digits: int = 3) -> str:
  """``digits`` significant digits, trailing zeros dropped: 9.9, 313."""
  return _sig(_number(v), digits)


def x(v: Any) -> str:
  """A compression as the report's tables write it: three significant digits."""
  return comparison.x(_number(v))


def pct(v: Any, digits: int = 2, zeros: bool = True) -> str:
  """A fraction as a percent, ``digits`` significant digits: 0.079 → 7.9, 0.02 → 2.0 (``zeros``
  false: 2)."""
  return _sig(100 * _number(v), digits, zeros)


def target(v: Any) -> str:
  """A target sparsity as a percent: 0.998 → 99.8, 0.9 → 90."""
  return _sig(100 * _number(v), 3)


def about(v: Any, digits: int = 1) -> str:
  """A rough figure ("~90×"): ``digits`` significant digits: 86.8 → 90, 0.0089 → 0.009."""
  return _sig(_number(v), digits)


def sci(v: Any) -> str:
  """A knob as the prose writes it: 1.5e-6, 0.0001 → 1e-4."""
  n = _number(v)
  return re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{n:.3g}" if n >= 0.01 else f"{n:.2e}".replace(
      ".00e", "e").replace("0e", "e"))


def of(v: Any, n: int) -> str:
  """An error percent as a count out of ``n`` (65 errors in 6,000)."""
  return str(round(_number(v) / 100 * n))


def count(v: Any) -> str:
  """An integer with thousands separators: 431,080."""
  n = _number(v)
  if n != int(n):
    raise ReadingError(f"{n} is not a count")
  return f"{int(n):,}"


def summaries() -> dict[str, Node]:
  """Every archived summary, by experiment id."""
  paths = sorted(p for p in (RESULTS / "sweeps").glob("*.json")
                 if not p.name.endswith(".trials.json"))
  return {p.stem: Node(json.loads(p.read_text()), p.stem) for p in paths}


def exports() -> dict[str, Node]:
  """Every archived export report (export_<name>_report.json), by name."""
  return {p.stem.removeprefix("export_").removesuffix("_report"): Node(json.loads(p.read_text()),
                                                                        p.name)
          for p in sorted(RESULTS.glob("export_*_report.json"))}


def environment() -> jinja2.Environment:
  env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                           trim_blocks=True, lstrip_blocks=True, autoescape=False)
  env.filters.update(d=d, signed=signed, seed_span=seed_span, g=g, x=x, pct=pct, target=target,
                     about=about, sci=sci, of=of, count=count, trained=trained)
  env.globals.update(front=front, at=at, published=published, record=record, config=config,
                     seeds=seeds, kernels=kernels, others=others, kept=kept,
                     rda_threshold=rda_threshold, share=share, density=density, better=better,
                     worse=worse, unarchived=unarchived, paper=paper, versus=versus,
                     at_published=at_published, update_distance=update_distance)
  env.tests["finite"] = lambda v: math.isfinite(_number(v))  # a loss that overflowed
  return env


def render(template: str | None = None, archive: dict[str, dict] | None = None) -> str:
  """The reading: ``template`` (default: the committed template) against the archive's
  summaries (``archive``: summaries by experiment id instead, e.g. report.summarize's)."""
  _TRIALS.clear()  # the archive may have changed since the last render
  text = TEMPLATE.read_text() if template is None else template
  found = summaries() if archive is None else {k: Node(v, k) for k, v in archive.items()}
  try:
    return HEADER + environment().from_string(text).render(exports=exports(), **found)
  except (ReadingError, jinja2.UndefinedError) as e:  # say where in the template
    lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if f.filename == "<template>"]
    where = TEMPLATE.name if template is None else "template"
    raise ReadingError(f"{where}, line {lines[-1] if lines else '?'}: {e}") from e


def write() -> bool:
  """Rewrites docs/results/reading.md; True if it changed."""
  text = render()
  changed = not OUTPUT.exists() or OUTPUT.read_text() != text
  if changed:
    OUTPUT.write_text(text)
  return changed


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--check", action="store_true",
                      help="exit 1 if docs/results/reading.md differs from the rendered template")
  args = parser.parse_args(argv)
  shown = OUTPUT.relative_to(REPO) if OUTPUT.is_relative_to(REPO) else OUTPUT
  if args.check:
    if OUTPUT.read_text() != render():
      raise SystemExit(f"{shown} is out of date: run python -m benchmarks.reading (or python -m "
                       "benchmarks.report --all)")
    return
  print(f"wrote {shown}" if write() else f"{shown} unchanged")


if __name__ == "__main__":
  main()
