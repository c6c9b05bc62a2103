#!/bin/sh
# SPDX-License-Identifier: BSD-3-Clause
# The README's picture of `ferry report`: the report of TRACE, shot in headless Chromium.
#   sh docs/report-picture.sh TRACE [FERRY [PNG]]      (make report-picture TRACE=FILE)
# FERRY defaults to build/default/bin/ferry, PNG to docs/report.png.
set -eu
trace=${1:?usage: docs/report-picture.sh TRACE [FERRY [PNG]]}
ferry=${2:-build/default/bin/ferry}
png=${3:-docs/report.png}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$ferry" report "$trace" -o "$work/report.html"
# Root needs --no-sandbox; a profile of its own so that it does not touch (or wait for) another.
chromium --headless --no-sandbox --disable-gpu --no-first-run --hide-scrollbars \
  --user-data-dir="$work/profile" --virtual-time-budget=5000 --window-size=1400,900 \
  --screenshot="$(realpath -m "$png")" "file://$work/report.html" 2>"$work/chromium.log" ||
  { cat "$work/chromium.log" >&2; exit 1; }
echo "wrote $png"
