#!/usr/bin/env bash
# Run today's tests against an older commit's code: does a test written for a defect fail where
# the defect was? (Issue 20: "each case has a test that fails on bf77cb4 and passes now".)
#
#   tools/tests_against_old_code.sh COMMIT TEST_FILE... [--out FILE]
#   tools/tests_against_old_code.sh bf77cb4 tests/test_pyiqa_behaviour.py tests/test_cli_results.py \
#       --out runs/issue20_old.txt
#
# It checks COMMIT out into a temporary git worktree under ${TMPDIR:-/tmp} (removed on exit),
# copies the current tests/ folder over the worktree's tests/ (conftest.py, helpers and any
# named file outside tests/ come along), and runs `python -m pytest -q -p no:cacheprovider -rA
# TEST_FILE...` inside it. `python -m` puts the worktree first on sys.path, ahead of the editable
# install of this checkout, so `import crossiqa_pyiqa` (and `python -m crossiqa_pyiqa.cli` in the
# tests' subprocesses) load COMMIT's code and its own git-tracked weights. The editable install's
# finder would still serve modules COMMIT lacks from this checkout; a sitecustomize takes it out.
# The script checks where every module resolves before pytest, and inside pytest's process where
# each loaded one came from, and stops (exit 2) if any is not COMMIT's. Git-ignored
# data (datasets/, runs/) is not in the worktree. Then it prints one line per test: its outcome on
# COMMIT (passed, failed, error, skipped, xfailed, xpassed) and the exception or skip reason. A
# failure only for an API COMMIT lacked is marked: new-API (ImportError, AttributeError, TypeError
# on an unknown keyword or option), new-CLI (argparse: unrecognized arguments).
# Python: $PYTHON, else the active venv's python, else .venv/bin/python. Set the tests' usual
# environment first (HF_HUB_OFFLINE=1, TORCH_HOME=...). Exit status: 0 when the tests ran (whatever
# their outcomes), 2 on a usage or setup error, otherwise pytest's own status.
set -euo pipefail

usage() { sed -n '4,6p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

out=''
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || usage; out="$2"; shift 2 ;;
    --out=*) out="${1#--out=}"; shift ;;
    -h|--help) usage ;;
    *) args+=("$1"); shift ;;
  esac
done
[ ${#args[@]} -ge 2 ] || usage
commit="${args[0]}"
files=("${args[@]:1}")

repo="$(cd "$(dirname "$0")/.." && pwd -P)"
cd "$repo"
sha="$(git rev-parse --verify --quiet "${commit}^{commit}")" || { echo "not a commit: $commit" >&2; exit 2; }
for f in "${files[@]}"; do
  case "$f" in /*|../*) echo "give test files relative to the repository root: $f" >&2; exit 2 ;; esac
  [ -f "${f%%::*}" ] || { echo "no such test file here: $f" >&2; exit 2; }
done
if [ -n "${PYTHON:-}" ]; then py="$PYTHON"
elif [ -n "${VIRTUAL_ENV:-}" ]; then py="$VIRTUAL_ENV/bin/python"
else py="$repo/.venv/bin/python"
fi
[ -z "$out" ] || case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

tmp="$(cd "$(mktemp -d "${TMPDIR:-/tmp}/tests-against-old.XXXXXX")" && pwd -P)"
wt="$tmp/worktree"
cleanup() {
  git -C "$repo" worktree remove --force "$wt" 2>/dev/null || true
  git -C "$repo" worktree prune 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
git worktree add --quiet --detach "$wt" "$sha"

# Today's tests over the old ones (no __pycache__), and named test files that live elsewhere.
(cd "$repo/tests" && find . -name __pycache__ -prune -o -type f -print0) |
  (cd "$repo/tests" && xargs -0 -r cp --parents -t "$wt/tests/")
for f in "${files[@]}"; do
  f="${f%%::*}"
  case "$f" in tests/*) ;; *) mkdir -p "$wt/$(dirname "$f")"; cp "$f" "$wt/$f" ;; esac
done

# The editable install's import finder maps crossiqa_pyiqa.* to this checkout: a module that COMMIT
# lacks (a new API) would be loaded from here. This sitecustomize, on PYTHONPATH for pytest and its
# subprocesses, takes that finder out after site-packages' .pth files put it in.
mkdir "$tmp/plugin"
cat > "$tmp/plugin/sitecustomize.py" <<'PY'
import os
import sys

_repo = os.environ['OLD_CODE_REPO']
for _finder in list(sys.meta_path):
    _mapping = getattr(sys.modules.get(getattr(_finder, '__module__', '')), 'MAPPING', None)
    if isinstance(_mapping, dict) and any(os.path.realpath(p).startswith(_repo + os.sep) for p in _mapping.values()):
        sys.meta_path.remove(_finder)
# then whatever sitecustomize would have run without this one
_here = os.path.dirname(os.path.abspath(__file__))
from importlib.machinery import PathFinder  # noqa: E402

_spec = PathFinder.find_spec('sitecustomize', [p for p in sys.path if os.path.abspath(p or '.') != _here])
if _spec is not None and _spec.loader is not None:
    exec(compile(open(_spec.origin).read(), _spec.origin, 'exec'), {'__name__': 'sitecustomize'})
PY

# A pytest plugin (loaded with -p from $tmp/plugin): refuses to run unless crossiqa_pyiqa is the
# worktree's, and records every test's outcome with the exception's type and first line.
cat > "$tmp/plugin/old_code_outcomes.py" <<'PY'
import os

import pytest

WORKTREE = os.environ['OLD_CODE_WORKTREE']
RESULTS = os.environ['OLD_CODE_RESULTS']
_outcomes = {}
_details = {}
_kinds = {}


def pytest_sessionstart(session):
    import crossiqa_pyiqa
    where = os.path.realpath(crossiqa_pyiqa.__file__)
    if not where.startswith(WORKTREE + os.sep):
        raise pytest.UsageError(f'crossiqa_pyiqa imported from {where}, not from the worktree {WORKTREE}')


def _first_line(text):
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return (lines[0] if lines else '')[:160]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and report.outcome == 'failed' and item.nodeid not in _details:
        exc, text = call.excinfo, str(call.excinfo.value)
        _details[item.nodeid] = f'{exc.typename}: {_first_line(text)}'
        # a failure only because COMMIT lacked a module, name, keyword or command-line flag
        if issubclass(exc.type, (ImportError, AttributeError)) or (
                exc.typename == 'TypeError' and ('unexpected keyword argument' in text or 'option' in text)):
            _kinds[item.nodeid] = 'new-API'
        elif 'unrecognized arguments:' in text:
            _kinds[item.nodeid] = 'new-CLI'


def pytest_runtest_logreport(report):
    nodeid, when = report.nodeid, report.when
    if hasattr(report, 'wasxfail'):
        outcome = 'xfailed' if report.skipped else ('xpassed' if when == 'call' else None)
    elif report.failed:
        outcome = 'failed' if when == 'call' else 'error'
    elif report.skipped:
        outcome = 'skipped'
        if isinstance(report.longrepr, tuple):
            _details.setdefault(nodeid, 'skip: ' + _first_line(report.longrepr[2]).removeprefix('Skipped: '))
    elif when == 'call':
        outcome = 'passed'
    else:
        outcome = None
    # the first non-pass wins (a teardown error after a failure keeps 'failed')
    if outcome and (_outcomes.get(nodeid) in (None, 'passed')):
        _outcomes[nodeid] = outcome


def pytest_collectreport(report):
    if report.failed:
        _outcomes[report.nodeid or '<collection>'] = 'error'
        _details[report.nodeid or '<collection>'] = 'collection: ' + _first_line(report.longrepr)


def pytest_sessionfinish(session):
    import sys
    leaked = sorted(name for name, module in list(sys.modules.items()) if name.split('.')[0] == 'crossiqa_pyiqa'
                    and getattr(module, '__file__', None)
                    and not os.path.realpath(module.__file__).startswith(WORKTREE + os.sep))
    if leaked:
        _outcomes['<import check>'] = 'error'
        _details['<import check>'] = 'loaded from outside the worktree: ' + ', '.join(leaked)
    with open(RESULTS, 'w') as f:
        for nodeid, outcome in _outcomes.items():
            detail = _details.get(nodeid, '')
            kind = _kinds.get(nodeid, '') if outcome in ('failed', 'error') else ''
            f.write(f'{nodeid}\t{outcome}\t{kind}\t{detail}\n')
PY

cd "$wt"
unset PYTHONSAFEPATH  # it would drop the worktree from the front of sys.path
export OLD_CODE_WORKTREE="$wt" OLD_CODE_RESULTS="$tmp/results.tsv" OLD_CODE_REPO="$repo"
export PYTHONPATH="$tmp/plugin${PYTHONPATH:+:$PYTHONPATH}"
# What `import crossiqa_pyiqa` loads from here, and where each of today's modules would come from:
# the worktree, or nowhere (new in the tests' time); never this checkout.
refuse() { echo "crossiqa_pyiqa does not resolve to the worktree: refusing to run" >&2; exit 2; }
"$py" - "$repo" "$wt" <<'PY' || refuse
import importlib.util
import os
import sys

import crossiqa_pyiqa

repo, wt = sys.argv[1:]
print('crossiqa_pyiqa.__file__ =', crossiqa_pyiqa.__file__)
bad = [crossiqa_pyiqa.__file__] if not os.path.realpath(crossiqa_pyiqa.__file__).startswith(wt + os.sep) else []
for folder, _, names in os.walk(os.path.join(repo, 'crossiqa_pyiqa')):
    for name in sorted(names):
        if name.endswith('.py'):
            parts = os.path.relpath(os.path.join(folder, name[:-3]), repo).split(os.sep)
            module = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
            try:
                spec = importlib.util.find_spec(module)
            except ImportError:  # a package COMMIT does not have
                continue
            if spec is not None and spec.origin and not os.path.realpath(spec.origin).startswith(wt + os.sep):
                bad.append(f'{module} -> {spec.origin}')
if bad:
    sys.exit('outside the worktree: ' + '; '.join(bad[:4]) + (f' and {len(bad) - 4} more' if len(bad) > 4 else ''))
PY
start=$SECONDS
set +e
"$py" -m pytest -q -p no:cacheprovider -p old_code_outcomes -rA "${files[@]}"
rc=$?
set -e
elapsed=$((SECONDS - start))
if grep -q '^<import check>' "$tmp/results.tsv" 2>/dev/null; then
  grep '^<import check>' "$tmp/results.tsv" | cut -f4 >&2
  echo "pytest loaded code that is not $commit's: the outcomes do not count" >&2
  exit 2
fi
if [ $rc -gt 1 ] || [ ! -s "$tmp/results.tsv" ]; then
  echo "pytest did not run the tests on $commit (exit $rc)" >&2
  exit $((rc > 1 ? rc : 2))
fi

table="$tmp/table.txt"
{
  echo "# tests of the working tree at $(git -C "$repo" rev-parse --short HEAD)," \
       "code of $(git rev-parse --short HEAD) ($(git log -1 --format='%ad %s' --date=short | cut -c1-70))"
  echo "# $(date -u +%Y-%m-%dT%H:%MZ), pytest ${elapsed}s; new-API/new-CLI: failed on a module, name, option" \
       "or flag that did not exist yet"
  awk -F'\t' '{ w = length($1) > w ? length($1) : w; id[NR] = $1; oc[NR] = $2; k[NR] = $3; d[NR] = $4 }
    END { fmt = "%-" w "s  %-8s  %-7s  %s\n"
          printf fmt, "test", "outcome", "note", "exception or skip reason"
          for (i = 1; i <= NR; i++) printf fmt, id[i], oc[i], k[i], d[i]
          for (i = 1; i <= NR; i++) n[oc[i]]++
          s = ""; for (o in n) s = s sprintf("%s%d %s", s ? ", " : "", n[o], o)
          print "# " NR " tests: " s }' "$tmp/results.tsv"
} > "$table"
echo
cat "$table"
if [ -n "$out" ]; then
  mkdir -p "$(dirname "$out")"
  cp "$table" "$out"
  echo "table written to $out"
fi
