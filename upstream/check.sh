#!/usr/bin/env bash
# Check the upstream patch series against pristine verl (docs/upstreaming.md).
#
#   bash upstream/check.sh [VERL_VERSION]     # default: the version the series is built for
#
# 1. fetches verl's sdist from the package index (`pip download --no-binary :all:`; it ships
#    verl's tests), checks its SHA-256 when pinned, unpacks it into a temporary git repo;
# 2. `git am`s upstream/patches/*.patch and checks they are what upstream/src builds;
# 3. runs, with the patched tree first on PYTHONPATH and verl's plugin loading off: the tests the
#    series adds, verl's own estimator / advantage tests, and upstream/tests (the plugin's
#    estimator against the patched one).
# Exits non-zero on any failure. Needs the project's test environment (verl's dependencies,
# pytest, verl_flexrec importable) and git. Set KEEP_TREE=1 to keep the patched tree.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
VERSION=${1:-$(python -c "import sys; sys.path.insert(0, '$HERE'); import series; print(series.VERL_VERSION)")}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/verl-upstream-check.XXXXXX")
if [ "${KEEP_TREE:-0}" = 1 ]; then
    echo "patched tree kept in $WORK"
else
    trap 'rm -rf "$WORK"' EXIT
fi
TREE="$WORK/verl-$VERSION"
START=$SECONDS

python "$HERE/series.py" pristine --version "$VERSION" --dest "$TREE"
python "$HERE/series.py" am --repo "$TREE"
python "$HERE/series.py" verify --repo "$TREE"
git -C "$TREE" log --format='  %s' pristine..HEAD

export VERL_USE_EXTERNAL_PLUGINS=none  # test verl + the series only, not entry-point plugins
export FLEXREC_UPSTREAM_TREE="$TREE"
PYTEST=(python -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning -W ignore::UserWarning)

echo "== tests added by the series, and verl's estimator tests (verl $VERSION + patches)"
(
    cd "$TREE"  # the added tests import names only the patched tree has, so an unpatched verl fails them
    PYTHONPATH="$TREE" "${PYTEST[@]}" \
        tests/trainer/ppo/test_adv_estimator_kwargs_on_cpu.py \
        tests/trainer/ppo/v1/test_compute_advantage_extra_info_on_cpu.py \
        tests/trainer/ppo/test_flexrec_advantage_on_cpu.py \
        tests/trainer/ppo/test_core_algos_on_cpu.py \
        tests/trainer/ppo/test_reinforce_pp_multiturn_on_cpu.py \
        tests/trainer/test_multi_trajectories_advantage_on_cpu.py \
        tests/test_base_config_on_cpu.py
)

echo "== the plugin's estimator against the patched verl's"
(cd "$ROOT" && PYTHONPATH="$TREE:$ROOT" "${PYTEST[@]}" upstream/tests)

echo "upstream/check.sh: verl $VERSION + $(ls "$HERE"/patches/*.patch | wc -l) patches OK in $((SECONDS - START)) s"
