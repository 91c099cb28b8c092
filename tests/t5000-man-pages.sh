#!/usr/bin/env bash
# t5000 — every man page is lint-clean, every tool has one, and every long option a tool's
# --help lists is documented in its page.
. "$HANDOFF_SRC/tests/lib.sh"
command -v man >/dev/null || skip_all "man-db not installed (make deps)"
for page in "$HANDOFF_SRC"/man/*.[0-9]; do
	out=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null)
	if [ -z "$out" ]; then ok "$(basename "$page") is lint-clean"
	else not_ok "$(basename "$page") is lint-clean"; echo "$out" | head -5 | sed 's/^/#   /'; fi
done
for tool in "$HANDOFF_BUILD"/bin/handoff-*; do
	name=$(basename "$tool")
	page=$(ls "$HANDOFF_SRC"/man/"$name".[0-9] 2>/dev/null | head -1)
	if [ -z "$page" ]; then not_ok "$name has a man page"; continue; fi
	ok "$name has a man page"
	help=$("$tool" --help 2>&1); rc=$?
	is "$rc" 0 "$name --help exits 0"
	text=$(MANWIDTH=200 man -l "$page" 2>/dev/null)
	missing=""
	for o in $(echo "$help" | grep -oE -- '--[a-z][a-z0-9-]+' | sort -u); do
		grep -q -- "$o" <<<"$text" || missing="$missing $o"
	done
	is "$missing" "" "every option of $name --help is in its man page"
done
done_testing
