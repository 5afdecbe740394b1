"""Mutation score: do the tests fail when the code is wrong?

Each planted bug in ``mutants.py`` (a file, an exact snippet of it, the snippet's
replacement, what the bug is) is applied, one at a time, to a temporary copy of the
repository -- never to the working tree -- and the suite is run on that copy with the CI
profile's examples (``--hypothesis-profile=mutation``: ``ci`` without shrinking).
A bug is *caught* when the suite fails (or errors, or hangs past the time limit); it
*survives* when the whole suite passes. The harmless rewrites must survive: if one is
"caught", a test depends on an implementation detail (or is flaky).

Speed: each mutant lists the test files most likely to catch it. Those run first with
``-x``; only if they all pass does the rest of the suite run. A survivor has therefore
passed the whole suite, so the score is the one the full suite would give, at a fraction
of its cost (a caught bug usually costs one test file).

    nice python benchmarks/mutation_score.py                  # every mutant
    nice python benchmarks/mutation_score.py --only adam      # descriptions matching 'adam'
    nice python benchmarks/mutation_score.py --without-torch  # as if torch were absent
    python benchmarks/mutation_score.py --check               # do all snippets still match?

A mutant whose snippet no longer occurs exactly once in its file is reported as stale
(the code moved on): update its snippet. So is one whose mutated file does not compile. Exit status 1 if a real bug survives, a harmless
rewrite is caught, or a snippet is stale.
"""
import argparse
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from mutants import HARMLESS, MUTANTS

ROOT = pathlib.Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".git", "__pycache__", ".hypothesis", "runs", "*.egg-info",
                                ".venv", "build", "dist")
# The "mutation" profile is "ci" without shrinking: the same examples and verdicts, but a
# caught bug's failing example is not minimised first.
PYTEST = ["-q", "-x", "-rf", "--hypothesis-profile=mutation"]


def stale(mutant):
    """Why ``mutant`` cannot be applied to today's code, or None. A mutant that is not
    valid Python would be "caught" by any suite: it counts as stale too."""
    path = ROOT / mutant.file
    if not path.exists():
        return f"{mutant.file} does not exist"
    source = path.read_text()
    count = source.count(mutant.original)
    if count != 1:
        return f"the snippet occurs {count} times in {mutant.file}"
    try:
        compile(source.replace(mutant.original, mutant.replacement), mutant.file, "exec")
    except SyntaxError as error:
        return f"the mutated file does not compile: {error.msg} (line {error.lineno})"
    return None


def run_pytest(copy, files, env, timeout):
    """(passed, first failing test or reason)."""
    try:
        result = subprocess.run([sys.executable, "-m", "pytest", *PYTEST, *files], cwd=copy,
                                env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout} s"
    if result.returncode == 0:
        return True, ""
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", result.stdout, re.M)
    if failed:
        return False, failed[0]
    lines = (result.stdout + result.stderr).strip().splitlines()
    return False, f"pytest exit {result.returncode}: {lines[-1] if lines else ''}"


def run_mutant(copy, mutant, env, timeout):
    """Apply ``mutant`` in ``copy``, run the suite, restore the file; (caught, detail)."""
    path = copy / mutant.file
    original = path.read_text()
    path.write_text(original.replace(mutant.original, mutant.replacement, 1))
    try:
        every = sorted(str(p.relative_to(copy)) for p in (copy / "tests").glob("test_*.py"))
        first = [f for f in mutant.tests if f in every]
        for files in (first, [f for f in every if f not in first]):
            if files:
                passed, detail = run_pytest(copy, files, env, timeout)
                if not passed:
                    return True, detail
        return False, ""
    finally:
        path.write_text(original)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", metavar="TEXT",
                        help="run only the mutants whose description or file contains "
                             "TEXT (case-insensitive); may be repeated")
    parser.add_argument("--without-torch", action="store_true",
                        help="hide torch from the tests, so its oracle tests skip")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per pytest run")
    parser.add_argument("--check", action="store_true",
                        help="only check that every snippet still matches")
    args = parser.parse_args()
    # A kill ends the run like Ctrl-C: the pytest child is stopped, the copy removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))

    planted = [(m, False) for m in MUTANTS] + [(m, True) for m in HARMLESS]
    if args.only:
        needles = [text.lower() for text in args.only]
        planted = [(m, h) for m, h in planted if any(
            n in m.description.lower() or n in m.file.lower() for n in needles)]
    stale_ones = [(m, why) for m, _ in planted if (why := stale(m))]
    for m, why in stale_ones:
        print(f"STALE  {m.description}: {why}")
    if args.check:
        print(f"{len(planted) - len(stale_ones)} of {len(planted)} snippets match")
        return 1 if stale_ones else 0

    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        copy = pathlib.Path(tmp) / "repo"
        shutil.copytree(ROOT, copy, ignore=IGNORE)
        env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
        if args.without_torch:  # a torch that fails to import: importorskip skips
            shadow = pathlib.Path(tmp) / "no-torch" / "torch"
            shadow.mkdir(parents=True)
            (shadow / "__init__.py").write_text("raise ImportError('hidden')\n")
            env["PYTHONPATH"] = f"{shadow.parent}{os.pathsep}{copy}"
        baseline, detail = run_pytest(copy, [], env, args.timeout)
        if not baseline:
            print(f"the unmutated suite fails ({detail}); fix that first")
            return 1
        caught = survivors = misjudged = 0
        started = time.perf_counter()
        stale_set = {id(m) for m, _ in stale_ones}
        for i, (mutant, harmless) in enumerate(planted, 1):
            if id(mutant) in stale_set:
                continue
            t0 = time.perf_counter()
            is_caught, detail = run_mutant(copy, mutant, env, args.timeout)
            seconds = time.perf_counter() - t0
            if harmless:
                verdict = "CAUGHT (should pass!)" if is_caught else "passes (harmless)"
                misjudged += is_caught
            else:
                verdict = "caught" if is_caught else "SURVIVED"
                caught += is_caught
                survivors += not is_caught
            print(f"[{i:>2}/{len(planted)}] {verdict:<9} {seconds:5.1f}s  {mutant.file}: "
                  f"{mutant.description}" + (f"\n{'':>19}by {detail}" if detail else ""),
                  flush=True)
        real = caught + survivors
        print(f"\nreal bugs caught: {caught}/{real}"
              + (f" ({100 * caught / real:.0f}%)" if real else "")
              + f"; harmless rewrites passing: {sum(h for _, h in planted) - misjudged}/"
              f"{sum(h for _, h in planted)}; stale: {len(stale_ones)}; "
              f"{time.perf_counter() - started:.0f} s"
              + (" (torch hidden)" if args.without_torch else ""))
    return 1 if survivors or misjudged or stale_ones else 0


if __name__ == "__main__":
    sys.exit(main())
