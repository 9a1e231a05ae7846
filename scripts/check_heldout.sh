#!/bin/sh
# The Makefile's check of HELDOUT, run when make reads the Makefile (before any stage, writing nothing):
#   sh scripts/check_heldout.sh INPUT... -- HELDOUT...
# Each argument is a file, a folder or a glob (a quoted glob is expanded here, as lcdata would). Prints one
# line saying what is wrong, or nothing: HELDOUT is empty, a HELDOUT word names no corpus file, or a file is
# both an input and held out (compared by path, with links to folders resolved). Cost: one `find` per folder.

corpus_files() {  # $1: a file, folder or glob -> the real paths of its corpus files, one per line
    for m in $1; do  # IFS is a newline: the glob is expanded, a path with spaces stays one word
        if [ -d "$m" ]; then
            d=$(cd "$m" && pwd -P) || continue
            find "$d" -type f \( -iname '*.jsonl' -o -iname '*.jsonl.zst' -o -iname '*.json.zst' \
                -o -iname '*.jsonl.zstd' -o -iname '*.jsonl.gz' -o -iname '*.json.gz' -o -iname '*.parquet' \)
        elif [ -f "$m" ]; then
            d=$(cd "$(dirname "$m")" && pwd -P) || continue
            echo "$d/$(basename "$m")"
        fi
    done
}

IFS='
'
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lcdata-heldout.XXXXXX") || exit 0
trap 'rm -rf "$tmp"' EXIT
: > "$tmp/inputs"
: > "$tmp/heldout"
side=inputs
n_heldout=0
for w in "$@"; do
    if [ "$w" = "--" ] && [ $side = inputs ]; then side=heldout; continue; fi
    if [ $side = heldout ]; then
        n_heldout=$((n_heldout + 1))
        if [ -z "$(corpus_files "$w")" ]; then
            echo "HELDOUT names '$w', which matches no corpus file (.jsonl, .jsonl.zst, .jsonl.gz, .parquet): check the path or glob"
            exit 0
        fi
    fi
    corpus_files "$w" >> "$tmp/$side"
done
if [ $n_heldout = 0 ]; then
    echo "HELDOUT is empty: name held-out files, folders or globs for eval-loss (documents INPUTS does not hold), e.g. HELDOUT=\"'corpus/heldout'\""
    exit 0
fi
sort -u "$tmp/inputs" > "$tmp/i"
sort -u "$tmp/heldout" > "$tmp/h"
both=$(comm -12 "$tmp/i" "$tmp/h")
if [ -n "$both" ]; then
    n=$(printf '%s\n' "$both" | wc -l | tr -d ' ')
    echo "HELDOUT and INPUTS share $n file(s), e.g. $(printf '%s\n' "$both" | head -n 1): held-out documents must not be trained on; name other HELDOUT files or narrow INPUTS"
fi
exit 0
