#!/usr/bin/env bash
# Build one eval case from a real upstream bug fix: a two-commit git bundle whose base is the upstream tree at the
# fix (only PATHS, the real files) and whose head reverts the fix, i.e. a PR that (re)introduces the bug.
#   eval/build_case.sh UPSTREAM_CLONE FIX_COMMIT CASE_DIR PATH...
# The bundle's refs are the tags `base` and `head`; case.json names them. Deterministic: fixed identities and
# the fix's own dates, so rebuilding gives the same commits.
set -euo pipefail
upstream=$(cd "$1" && pwd); fix=$2; case_dir=$3; shift 3
mkdir -p "$case_dir"; case_dir=$(cd "$case_dir" && pwd)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
export GIT_AUTHOR_NAME="prfleet eval corpus" GIT_AUTHOR_EMAIL="eval@prfleet.invalid"
export GIT_COMMITTER_NAME="$GIT_AUTHOR_NAME" GIT_COMMITTER_EMAIL="$GIT_AUTHOR_EMAIL"
export GIT_AUTHOR_DATE GIT_COMMITTER_DATE
GIT_AUTHOR_DATE=$(git -C "$upstream" log -1 --format=%aI "$fix"); GIT_COMMITTER_DATE=$GIT_AUTHOR_DATE
subject=$(git -C "$upstream" log -1 --format=%s "$fix")
git -C "$work" init -q -b main
git -C "$upstream" archive "$fix" -- "$@" | tar -x -C "$work"
git -C "$work" add -A
git -C "$work" commit -q -m "Upstream $fix: $subject" -m "The files $* of $(git -C "$upstream" remote get-url origin 2>/dev/null || echo upstream) at $fix."
git -C "$work" tag base
git -C "$upstream" diff "$fix^" "$fix" -- "$@" | git -C "$work" apply -R --index
git -C "$work" commit -q -m "Revert \"$subject\"" -m "This reverts the fix $fix (the PR under review reintroduces the bug)."
git -C "$work" tag head
git -C "$work" bundle create "$case_dir/repo.bundle" base head 2>/dev/null
git -C "$work" diff -U0 base head
