"""Mutation testing with cosmic-ray: how many planted one-line bugs the fast tests catch.

  python -m mutation.run --package sparse_optax            # every mutant of the library
  python -m mutation.run --package train --sample 40       # a random sample of the loop's
  python -m mutation.run --package sparse_optax --survivors-of mutation/results/sparse_optax.json
                                                           # the survivors again, after new tests

Each mutant runs in a fresh process (cosmic-ray's http workers, one per core, each in its own
copy of the working tree: cosmic-ray edits the files it mutates). Operators are the usual
one-replacement-per-operator set (as mutmut's): ``+ -> -``, ``* -> /``, ``< -> <=``, ``== -> !=``,
numbers, booleans, ``not``, ``and``/``or``, loops, exceptions; the other cross-products of
binary operators (``* -> <<``, ``+ -> %`` ...) crash at trace time and only add run time.
Writes ``mutation/results/<package>.json``: the score, the wall time and every survivor.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

FAST_TESTS = {
    "sparse_optax": [
        "tests/test_math.py", "tests/test_errors.py", "tests/test_edge_cases.py",
        "tests/test_metrics_and_masking.py", "tests/test_baselines.py",
        "tests/test_compressed_sensing.py", "tests/test_compact.py", "tests/test_layouts.py",
        "tests/test_optax_compat.py", "sparse_optax", "tests/test_optimizers_common.py",
    ],
    "train": [
        "tests/test_input_pipeline.py", "tests/test_lobster_procedure.py",
        "tests/test_train.py", "tests/test_methods_in_loop.py",
    ],
}
# Tests left out of a package's run (-k): a 4-device subprocess, real data, a CLI subprocess.
DESELECT = {"train": "not real_mnist and not four_devices and not unknown_config_flag"}
# The modules of train/ where logic lives (input pipeline, steps, checkpointing, LOBSTER).
MODULES = {
    "sparse_optax": ["sparse_optax"],
    "train": ["train/input_pipeline.py", "train/train.py", "train/lobster.py"],
}
KEEP_OPERATORS = re.compile(
    r"/(NumberReplacer|AddNot|ReplaceTrueWithFalse|ReplaceFalseWithTrue|ReplaceAndWithOr"
    r"|ReplaceOrWithAnd|ZeroIterationForLoop|ExceptionReplacer|ReplaceBreakWithContinue"
    r"|ReplaceContinueWithBreak|RemoveDecorator"
    r"|ReplaceBinaryOperator_(Add_Sub|Sub_Add|Mul_Div|Div_Mul|Pow_Mul)"
    r"|ReplaceComparisonOperator_(Lt_LtE|LtE_Lt|Gt_GtE|GtE_Gt|Eq_NotEq|NotEq_Eq|Is_IsNot|IsNot_Is"
    r"|In_NotIn|NotIn_In)"
    r"|ReplaceUnaryOperator_(USub_UAdd|Delete_Not))$")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _copy_tree(dest: Path) -> None:
  """The working tree as git sees it (tracked and untracked, not ignored), uncommitted edits too."""
  files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                         check=True, capture_output=True).stdout.decode().split("\0")
  for name in filter(None, files):
    if (REPO / name).is_file():
      (dest / name).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(REPO / name, dest / name)


def _test_paths(package: str) -> list[str]:
  """The package's fast test files that exist (a missing one would fail every mutant)."""
  return [p for p in FAST_TESTS[package] if (REPO / p).exists()]


def _test_command(package: str) -> str:
  """pytest on the package's fast tests, stopping at the first failure."""
  tests = " ".join(_test_paths(package))
  if package in DESELECT:
    tests += f' -k "{DESELECT[package]}"'
  return f"{sys.executable} -m pytest -x -q -p no:cacheprovider -p no:xdist {tests}"


def _config(package: str, ports: list[int], timeout: float) -> str:
  command = _test_command(package)
  urls = ", ".join(f'"http://localhost:{p}"' for p in ports)
  modules = MODULES[package]
  lines = [
      "[cosmic-ray]",
      f'module-path = {json.dumps(modules if len(modules) > 1 else modules[0])}',
      f"timeout = {timeout}",
      "excluded-modules = []",
      f"test-command = {json.dumps(command)}",
      "[cosmic-ray.distributor]",
      'name = "http"',
      "[cosmic-ray.distributor.http]",
      f"worker-urls = [{urls}]",
  ]
  return "\n".join(lines) + "\n"


def _changed_lines(diff: str) -> tuple[str, ...]:
  """The removed and added lines of a mutant's diff, stripped: stable when line numbers move."""
  return tuple(sorted(line[0] + line[1:].strip() for line in diff.splitlines()
                      if line[:1] in "+-" and line[:3] not in ("+++", "---")))


def _mutant_key(root: Path, mutation) -> tuple:
  """(module, changed lines) of one mutation, computed without running it."""
  import difflib
  from cosmic_ray.mutating import mutate_code
  from cosmic_ray.plugins import get_operator
  source = (root / mutation.module_path).read_text()
  mutated = mutate_code(source, get_operator(mutation.operator_name)(), mutation.occurrence)
  diff = "\n".join(difflib.unified_diff(source.splitlines(), (mutated or source).splitlines(),
                                        lineterm=""))
  return Path(mutation.module_path).as_posix(), _changed_lines(diff)


def _select(session: Path, sample: int | None, seed: int,
            survivors: list[dict] | None = None, root: Path | None = None) -> tuple[int, int]:
  """Marks every mutant outside the operator set (the sample, the given survivors) skipped."""
  from cosmic_ray.work_db import WorkDB, use_db
  from cosmic_ray.work_item import WorkerOutcome, WorkResult
  with use_db(str(session), WorkDB.Mode.open) as db:
    items = list(db.work_items)
    keep = [i.job_id for i in items
            if all(KEEP_OPERATORS.search(m.operator_name) for m in i.mutations)]
    if survivors is not None:  # only the earlier survivors, wherever their lines moved
      wanted = {(s["module"], _changed_lines(s["diff"])) for s in survivors}
      by_id = {i.job_id: i for i in items}
      keep = [j for j in keep if _mutant_key(root, by_id[j].mutations[0]) in wanted]
    if sample is not None and sample < len(keep):
      keep = random.Random(seed).sample(sorted(keep), sample)
    skipped = [i.job_id for i in items if i.job_id not in set(keep)]
    db.set_multiple_results(skipped, WorkResult(worker_outcome=WorkerOutcome.SKIPPED))
  return len(items), len(keep)


def _report(session: Path, package: str, generated: int, seconds: float,
            workers: int, sample: int | None, seed: int, rerun: bool = False) -> dict:
  from cosmic_ray.work_db import WorkDB, use_db
  from cosmic_ray.work_item import TestOutcome, WorkerOutcome
  survivors, killed = [], []
  counts = {"killed": 0, "survived": 0, "incompetent": 0, "error": 0}
  with use_db(str(session), WorkDB.Mode.open) as db:
    for item, result in db.completed_work_items:
      if result.worker_outcome == WorkerOutcome.SKIPPED:
        continue
      if result.worker_outcome != WorkerOutcome.NORMAL:
        counts["error"] += 1
        continue
      if result.test_outcome == TestOutcome.SURVIVED:
        counts["survived"] += 1
        m = item.mutations[0]
        survivors.append({"module": str(Path(m.module_path).as_posix()), "line": m.start_pos[0],
                          "operator": m.operator_name.split("/")[-1],
                          "occurrence": m.occurrence, "diff": result.diff})
      elif result.test_outcome == TestOutcome.INCOMPETENT:
        counts["incompetent"] += 1
      else:
        counts["killed"] += 1
        m = item.mutations[0]
        failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", result.output or "", re.MULTILINE)
        killed.append({"module": str(Path(m.module_path).as_posix()), "line": m.start_pos[0],
                       "operator": m.operator_name.split("/")[-1], "diff": result.diff,
                       "killed_by": failed[0] if failed else
                       ("timeout" if result.output == "timeout" else "import or collection")})
  tested = counts["killed"] + counts["survived"]
  return {
      "package": package, "modules": MODULES[package],
      "tests": _test_paths(package), "test_command": _test_command(package).split(" ", 1)[1],
      "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip(),
      "generated": generated,
      "sample": sample, "seed": seed, **counts, "tested": tested,
      "score": counts["killed"] / tested if tested else None,
      "wall_s": round(seconds), "workers": workers,
      "machine": f"{os.cpu_count()} cores, {os.uname().machine}",
      "survivors": sorted(survivors, key=lambda s: (s["module"], s["line"])),
      # Which test caught each mutant: kept for re-runs of survivors (short lists).
      **({"killed_mutants": sorted(killed, key=lambda s: (s["module"], s["line"]))}
         if sample is not None or rerun else {}),
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--package", choices=sorted(FAST_TESTS), required=True)
  parser.add_argument("--sample", type=int, default=None, help="test this many mutants, at random")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
  parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant")
  parser.add_argument("--out", type=Path, default=REPO / "mutation" / "results")
  parser.add_argument("--survivors-of", type=Path, default=None,
                      help="re-test only the survivors listed in this results file")
  args = parser.parse_args(argv)

  root = Path(tempfile.mkdtemp(prefix=f"mutate_{args.package}_"))
  ports = [_free_port() for _ in range(args.workers)]
  copies = [root / f"worker{i}" for i in range(args.workers)]
  for copy in copies:
    _copy_tree(copy)
  config, session = root / "config.toml", root / "session.sqlite"
  config.write_text(_config(args.package, ports, args.timeout))
  # A persistent compilation cache, warmed by the unmutated run: a mutant recompiles only
  # what it changed (the library's fast tests go from 100 s to 29 s).
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_cpu_multi_thread_eigen=false",
             JAX_COMPILATION_CACHE_DIR=str(root / "jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
  cosmic_ray = [sys.executable, "-m", "cosmic_ray.cli"]
  subprocess.run([*cosmic_ray, "init", str(config), str(session)], cwd=copies[0], check=True)
  # The unmutated tree must pass, or every mutant would count as killed.
  baseline = subprocess.run(_test_command(args.package), shell=True, cwd=copies[0],
                            env={**env, "PYTHONPATH": str(copies[0])}, capture_output=True,
                            text=True)
  if baseline.returncode:
    sys.exit(f"The unmutated tests fail:\n{baseline.stdout[-3000:]}")
  survivors = (json.loads(args.survivors_of.read_text())["survivors"]
               if args.survivors_of else None)
  generated, selected = _select(session, args.sample, args.seed, survivors, copies[0])
  print(f"{generated} mutants generated, {selected} to test, {args.workers} workers in {root}",
        flush=True)
  workers = [subprocess.Popen([*cosmic_ray, "http-worker", "--port", str(port)], cwd=copy,
                              env={**env, "PYTHONPATH": str(copy)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for port, copy in zip(ports, copies)]
  start = time.time()
  try:
    time.sleep(5)  # the workers' servers start
    subprocess.run([*cosmic_ray, "exec", str(config), str(session)], cwd=copies[0], check=True)
  finally:
    for worker in workers:
      worker.terminate()
  report = _report(session, args.package, generated, time.time() - start, args.workers,
                   args.sample, args.seed, rerun=args.survivors_of is not None)
  args.out.mkdir(parents=True, exist_ok=True)
  name = f"{args.package}.rerun" if args.survivors_of else args.package
  if args.survivors_of:
    report["rerun_of"] = str(args.survivors_of.resolve().relative_to(REPO))
  (args.out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
  print(f"{args.package}: {report['killed']} killed / {report['tested']} "
        f"({report['score']:.1%}), {report['survived']} survived, "
        f"{report['incompetent']} incompetent, {report['error']} errors, {report['wall_s']} s")
  shutil.rmtree(root, ignore_errors=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
