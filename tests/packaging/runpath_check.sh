#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# Fails when an ELF file under the given directories has an RPATH or RUNPATH element that is empty
# or relative (neither absolute nor starting with $ORIGIN): the loader reads those against the
# current directory of whoever runs the program, which may be another user's.
#   runpath_check.sh DIR...
set -euo pipefail
bad=0 checked=0
while IFS= read -r -d '' f; do
  head -c 4 "$f" 2> /dev/null | grep -q $'^\x7fELF' || continue
  checked=$((checked + 1))
  while IFS= read -r path; do
    rest=$path
    while :; do  # each element, the empty ones too (a trailing ':' is one)
      p=${rest%%:*}
      case "$p" in
        /* | '$ORIGIN' | '$ORIGIN/'*) ;;
        *) echo "FAIL: $f: RUNPATH [$path] has the element '$p'" >&2; bad=1 ;;
      esac
      [[ $rest == *:* ]] || break
      rest=${rest#*:}
    done
  done < <(readelf -d "$f" 2> /dev/null | sed -n 's/.*(R\(UN\)\{0,1\}PATH).*\[\(.*\)\]$/\2/p')
done < <(find "$@" -type f \( -perm -u+x -o -name '*.so*' \) -print0)
[ "$checked" -gt 0 ] || { echo "FAIL: no ELF file under $*" >&2; exit 1; }
[ "$bad" -eq 0 ] || exit 1
echo "runpaths: $checked ELF files, none with an empty or relative element"
