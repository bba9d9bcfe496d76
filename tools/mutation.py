"""Mutation testing of the modules that decide results (`make mutation`; not part of CI).

    python tools/mutation.py [--max-children N] [--survivors] [MODULE ...]   (default: every module below)

For each module, mutmut (3.x) runs in its own scratch copy of the repository under
``build/mutation/<module>/``, mutating that one file and running only the tests named
for it (mutmut further narrows them to the tests that reach the mutated function). The
per-module counts go to ``build/mutation/summary.md`` and ``summary.json``; the surviving
mutants of a module are listed with ``cd build/mutation/<module> && mutmut results`` and
shown with ``mutmut show <name>``.

A mutant is *killed* when a test fails on it (or it times out), *survived* when every
test passes. Score = killed / (killed + survived + no tests).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "build" / "mutation"

# module -> (file to mutate, the tests that exercise it); fastest first
MODULES: dict[str, tuple[str, list[str]]] = {
    "metrics": ("src/deconvnet/metrics.py", ["tests/test_metrics.py"]),
    "score": ("src/deconvnet/inference/score.py", ["tests/inference/test_score_and_submission.py"]),
    "submission": ("src/deconvnet/inference/submission.py", ["tests/inference/test_score_and_submission.py"]),
    "cache": ("src/deconvnet/data/proposals/cache.py", ["tests/data/test_proposals.py"]),
    "crf": ("src/deconvnet/inference/crf.py", ["tests/inference/test_crf.py"]),
    "generators": ("src/deconvnet/data/proposals/generators.py", ["tests/data/test_proposals.py"]),
    "optim": ("src/deconvnet/training/optim.py", ["tests/training/test_optim.py"]),
    "download": ("src/deconvnet/data/download.py",
                 ["tests/data/test_download.py", "tests/caffe/test_official_download.py"]),
    "windows": ("src/deconvnet/data/windows.py", ["tests/data/test_windows.py"]),
    "transforms": ("src/deconvnet/data/transforms.py",
                   ["tests/data/test_datasets.py", "tests/data/test_sample_seeds.py",
                    "tests/data/test_device_windows.py"]),
    "sample_seeds": ("src/deconvnet/data/sample_seeds.py", ["tests/data/test_sample_seeds.py"]),
    "instance": ("src/deconvnet/inference/instance.py",
                 ["tests/inference/test_instance.py", "tests/inference/test_predictor.py"]),
    "cpu_paste": ("src/deconvnet/inference/cpu_paste.py", ["tests/inference/test_instance.py"]),
    # test_eval_settings.py (six evaluations, ~25 s a mutant) is left out: test_predictor.py
    # builds the predictor from a config directly
    "predictor": ("src/deconvnet/inference/predictor.py", ["tests/inference/test_predictor.py"]),
    # not the 2-process DDP test (~1 min a mutant); of test_eval_settings.py, the ensemble cases
    "ensemble": ("src/deconvnet/inference/ensemble.py", [
        "tests/inference/test_ensemble.py::test_oracle_scores_100_percent_on_every_row",
        "tests/inference/test_ensemble.py::test_rows_without_networks_are_skipped_and_a_wrong_network_scores_low",
        "tests/inference/test_ensemble.py::test_product_ensemble_and_sum_aggregation_keep_the_oracle_exact",
        "tests/inference/test_ensemble.py::test_a_score_cache_alone_gives_every_row_with_its_ensemble",
        "tests/inference/test_ensemble.py::test_the_evaluator_needs_exactly_one_source_of_scores",
        "tests/inference/test_ensemble.py::test_the_evaluator_passes_each_images_proposals_and_caches_its_scores",
        "tests/inference/test_eval_settings.py::test_the_ensemble_setting_decides_the_edeconvnet_labels",
        "tests/inference/test_ensemble_lifecycle.py",
    ]),
}
# what the tests read besides src/ and tests/
ALSO_COPY = ["configs", "experiments", "README.md"]


# Every mutant's test run is a new pytest session, so the session fixture synthetic_voc
# would generate its tree again for each mutant: a copy of the tree generated once is
# put in place instead (generate() then finds a tree made with its arguments and keeps it).
SYNTHETIC_CACHE = '''
import hashlib
import shutil

import deconvnet.data.synthetic as _synthetic

_generate = _synthetic.generate
_CACHE = pathlib.Path(__file__).resolve().parent / ".synthetic-cache"


def _cached_generate(root, *args, **kwargs):
    key = hashlib.sha1(repr((args, sorted(kwargs.items()))).encode()).hexdigest()[:16]
    cached = _CACHE / key
    if not (cached / "VOCdevkit").is_dir():
        _generate(cached, *args, **kwargs)
    target = pathlib.Path(root) / "VOCdevkit"
    if not target.exists():
        shutil.copytree(cached / "VOCdevkit", target)
    return _generate(root, *args, **kwargs)


_synthetic.generate = _cached_generate
'''


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(item) for item in items) + "]"


def _config(name: str) -> str:
    """The scratch copy's pyproject.toml: the repository's, plus mutmut's settings for ``name``."""
    target, tests = MODULES[name]
    return (REPO / "pyproject.toml").read_text() + (
        "\n[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f"only_mutate = {_toml_list([target])}\n"
        f"also_copy = {_toml_list([*ALSO_COPY, 'conftest.py'])}\n"
        f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]\n'
        # generous: on a busy machine a slow test must not count as a mutant killed by timeout
        "timeout_multiplier = 50.0\n"
        "timeout_constant = 60.0\n"
    )


def prepare(name: str) -> Path:
    """A scratch copy of the repository whose pyproject.toml configures mutmut for ``name``."""
    work = OUT / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache")
    for entry in ["src", "tests", *ALSO_COPY]:
        if (REPO / entry).is_dir():
            shutil.copytree(REPO / entry, work / entry, ignore=ignore)
        else:
            shutil.copy2(REPO / entry, work / entry)
    (work / "pyproject.toml").write_text(_config(name))
    # mutmut runs the tests inside work/mutants/; an editable install of this repository
    # would otherwise put the unmutated src/ first on sys.path. A root conftest.py (loaded
    # before tests/conftest.py and the test modules) puts the mutated copy first.
    (work / "conftest.py").write_text(
        '"""tools/mutation.py: import the mutated copy of src/."""\n'
        "import pathlib\nimport sys\n\n"
        "sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / 'src'))\n"
        # mutmut forks every mutant's test run from one parent: tqdm's default lock is a
        # multiprocessing semaphore shared by all of them, and one child killed while it
        # holds it hangs every later one. A per-process lock instead.
        "import threading\n\nimport tqdm\n\ntqdm.tqdm.set_lock(threading.RLock())\n"
        + SYNTHETIC_CACHE
    )
    return work


def _env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    # one OpenMP thread: mutmut forks each mutant's run from a process that has run tests,
    # and a fork taken while GNU OpenMP's thread team exists hangs at its next parallel op
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    # numba's compiled loops (cpu_paste.py) run as Python, where mutmut's trampolines work
    env.update(NUMBA_DISABLE_JIT="1")
    return env


MUTMUT = [sys.executable, "-m", "mutmut"]


def _survivors(work: Path) -> list[str]:
    listing = subprocess.run([*MUTMUT, "results"], cwd=work, env=_env(), capture_output=True, text=True).stdout
    return [line.split(":")[0].strip() for line in listing.splitlines()
            if line.strip().endswith(("survived", "no tests"))]


def module_stats(name: str, work: Path, minutes: float | None = None) -> dict:
    """The counts of module ``name``'s last run in ``work`` (mutmut export-cicd-stats)."""
    subprocess.run([*MUTMUT, "export-cicd-stats"], cwd=work, env=_env(), check=True, capture_output=True)
    stats = json.loads((work / "mutants" / "mutmut-cicd-stats.json").read_text())
    stats["survivors"] = _survivors(work)
    stats["minutes"] = minutes
    killed = stats["killed"] + stats["timeout"]
    tested = killed + stats["survived"] + stats["no_tests"]
    stats["score"] = round(100 * killed / tested, 1) if tested else None
    stats["file"] = MODULES[name][0]
    return stats


def run_module(name: str, max_children: int | None = None, survivors_only: bool = False) -> dict:
    """Mutation-test module ``name`` from scratch, or (``survivors_only``) re-test only the
    survivors of its last run against the current tests: valid while the module's source
    and its test list are the ones that run used (otherwise a full run is made)."""
    target = MODULES[name][0]
    work = OUT / name
    # mutmut forgets every result when its test selection changes, so the survivors of the
    # last run only stand for it while the config (the module's test list) is the same too
    unchanged = (work / "mutants").is_dir() and (work / target).is_file() and \
        (work / target).read_bytes() == (REPO / target).read_bytes() and \
        (work / "pyproject.toml").read_text() == _config(name)
    names: list[str] = []
    if survivors_only and unchanged:
        names = _survivors(work)
        ignore = shutil.ignore_patterns("__pycache__", ".pytest_cache")
        for destination in (work / "tests", work / "mutants" / "tests"):  # tests added since
            shutil.copytree(REPO / "tests", destination, ignore=ignore, dirs_exist_ok=True)
    else:
        work = prepare(name)
    start = time.monotonic()
    # --max-children: how many mutants are tested at once (mutmut's default: one per CPU)
    children = ["--max-children", str(max_children)] if max_children else []
    if not survivors_only or names:
        subprocess.run([*MUTMUT, "run", *children, *names], cwd=work, env=_env(), check=False)
    return module_stats(name, work, round((time.monotonic() - start) / 60, 1))


def write_summary(results: dict[str, dict]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "summary.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| module | killed | survived | no tests | total | score | minutes |", "|---|---|---|---|---|---|---|"]
    for s in results.values():
        lines.append(f"| {s['file']} | {s['killed'] + s['timeout']} | {s['survived']} | {s['no_tests']} | "
                     f"{s['total']} | {s['score']}% | {s['minutes'] if s['minutes'] is not None else ''} |")
    (OUT / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", choices=[[], *MODULES], default=list(MODULES),
                        metavar="MODULE", help=f"any of: {', '.join(MODULES)}")
    parser.add_argument("--max-children", type=int, default=None, metavar="N",
                        help="test at most N mutants at once (default: mutmut's, one per CPU)")
    parser.add_argument("--survivors", action="store_true",
                        help="re-test only the survivors of each module's last run (after adding tests)")
    parser.add_argument("--report", action="store_true",
                        help="run nothing: rewrite the summary from the modules' last runs")
    args = parser.parse_args()
    summary_path = OUT / "summary.json"
    if args.report:
        write_summary({name: module_stats(name, OUT / name) for name in args.modules or list(MODULES)
                       if (OUT / name / "mutants").is_dir()})
        return 0
    for name in args.modules or list(MODULES):
        stats = run_module(name, args.max_children, args.survivors)
        # read again: another run may have finished other modules meanwhile
        results = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        results[name] = stats
        write_summary(results)  # after every module: a long run can be stopped at any point
    return 0


if __name__ == "__main__":
    sys.exit(main())
