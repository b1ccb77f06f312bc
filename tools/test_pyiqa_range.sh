#!/usr/bin/env bash
# Install the lowest and the highest supported pyiqa, each in a scratch venv, and run the plugin's
# tests (the README's test command) on each.
#
#   tools/test_pyiqa_range.sh                 # both ends of the range (PYIQA_LOW, PYIQA_HIGH below)
#   tools/test_pyiqa_range.sh --lowest        # the lower end only (.ci/run: its own venv has the highest)
#   tools/test_pyiqa_range.sh 0.1.15.post2    # any versions
#   VENV_ROOT=/tmp/venvs tools/test_pyiqa_range.sh
#
# The range must match setup.cfg's `pyiqa>=...` requirement (checked below). Tested so far:
# 0.1.16 passes; 0.1.15 (and 0.1.15.post2, same code but Q-Align) fails 5 tests, 0.1.14.1 more
# (README, "pyiqa versions"). Each venv is made
# once under $VENV_ROOT (default: .venvs/ in the repository, git-ignored) and reused; the install
# needs PyPI (or a local index), the tests run offline. TORCH_HOME is passed through: point it
# at ../shared/data/torch_home to run the tests that need niqe/brisque's weights (as .ci/run does).
set -euo pipefail
cd "$(dirname "$0")/.."
PYIQA_LOW=0.1.16
PYIQA_HIGH=0.1.16
grep -q "pyiqa>=${PYIQA_LOW}," setup.cfg || { echo "setup.cfg's lower bound is not ${PYIQA_LOW}" >&2; exit 2; }
VENV_ROOT="${VENV_ROOT:-.venvs}"
versions=("$@")
if [ ${#versions[@]} -eq 0 ]; then
  versions=("$PYIQA_LOW")
  [ "$PYIQA_LOW" = "$PYIQA_HIGH" ] || versions+=("$PYIQA_HIGH")
fi
if [ "${versions[0]}" = "--lowest" ]; then
  if [ "$PYIQA_LOW" = "$PYIQA_HIGH" ]; then
    echo "pyiqa range: lowest = highest = $PYIQA_LOW (tested by the main venv); nothing more to run"
    exit 0
  fi
  versions=("$PYIQA_LOW")
fi
status=0
summary=()
for v in "${versions[@]}"; do
  venv="$VENV_ROOT/pyiqa-$v"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q -e '.[test]' "pyiqa==$v"
  got=$("$venv/bin/python" -c 'import pyiqa; print(pyiqa.__version__)')
  echo "== pyiqa $got ($venv)"
  if HF_HUB_OFFLINE=1 "$venv/bin/python" -m pytest -q -p no:cacheprovider; then
    summary+=("pyiqa $got: passed")
  else
    summary+=("pyiqa $got: FAILED")
    status=1
  fi
done
printf '%s\n' "${summary[@]}"
exit $status
