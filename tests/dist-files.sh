#!/bin/sh
# dist-files.sh TARBALL - every file git tracks is in the release tarball,
# but for the repository's own (.ci/, .gitignore, m4/.keep) and the
# benchmark results under bench/. The tarball's `make check` (in `make
# distcheck`) runs only part of the suite (DIST_TESTS and PLAIN_TESTS in
# Makefile.am), so this is what proves that the rest would find its scripts
# and data too.
# Prints "dist-files: N passed, M failed" like the other scripts.
set -eu
tarball=$1
top=$(cd "$(dirname "$0")/.." && pwd)
if ! git -C "$top" rev-parse --git-dir >/dev/null 2>&1; then
    echo "dist-files: not a git checkout; nothing to compare with"
    exit 77
fi
prefix=$(basename "$tarball" .tar.gz)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tar -tzf "$tarball" | sed -n "s|^$prefix/||p" | grep -v '/$' | sort >"$tmp/dist"
git -C "$top" ls-files | grep -v -e '^\.ci/' -e '^\.gitignore$' -e '^m4/\.keep$' \
    -e '^bench/results' -e '^bench/[^/]*\.png$' | sort >"$tmp/git"
missing=$(comm -23 "$tmp/git" "$tmp/dist")
if [ -n "$missing" ]; then
    echo "dist-files: tracked but not in $(basename "$tarball") (add them to EXTRA_DIST):"
    echo "$missing" | sed 's/^/    /'
    echo "dist-files: 0 passed, 1 failed"
    exit 1
fi
echo "dist-files: every one of the $(wc -l <"$tmp/git") tracked files is in $(basename "$tarball")"
echo "dist-files: 1 passed, 0 failed"
