#!/usr/bin/env bash
# Build the cat2dog unpaired dataset from AFHQ (StarGAN v2: `bash download.sh afhq-dataset`).
#
#   bash datasets/prepare_afhq_cat2dog.sh <afhq_dir> [output_dir=datasets/cat2dog] [--link]
#
# <afhq_dir>/train/cat -> trainA, train/dog -> trainB, test/cat -> testA, test/dog -> testB.
# Files are copied (or symlinked with --link) into a temporary folder that is renamed into place
# when complete.
set -euo pipefail

usage() { echo "usage: bash datasets/prepare_afhq_cat2dog.sh <afhq_dir> [output_dir] [--link]" >&2; exit 2; }
LINK=0
ARGS=()
for a in "$@"; do
  case "$a" in
    --link) LINK=1 ;;
    -h|--help) usage ;;
    *) ARGS+=("$a") ;;
  esac
done
[[ ${#ARGS[@]} -ge 1 && ${#ARGS[@]} -le 2 ]] || usage
SRC="${ARGS[0]}"
OUT="${ARGS[1]:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/cat2dog}"

for d in train/cat train/dog test/cat test/dog; do
  if [[ ! -d "$SRC/$d" ]]; then
    echo "error: $SRC/$d not found — pass the AFHQ folder that contains train/ and test/ (afhq/)" >&2; exit 1
  fi
done
if [[ -e "$OUT" ]]; then echo "error: $OUT already exists — remove it or choose another output_dir" >&2; exit 1; fi

PARENT="$(dirname "$OUT")"
mkdir -p "$PARENT"
TMP="$(mktemp -d "$PARENT/.cat2dog.tmp.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
while read -r from to; do
  mkdir "$TMP/$to"
  if [[ $LINK -eq 1 ]]; then
    for f in "$SRC/$from"/*; do ln -s "$(cd "$(dirname "$f")" && pwd)/$(basename "$f")" "$TMP/$to/"; done
  else
    cp -R "$SRC/$from/." "$TMP/$to/"
  fi
  echo "  $to: $(find -L "$TMP/$to" -type f | wc -l | tr -d ' ') images (from $from)"
done <<'MAP'
train/cat trainA
train/dog trainB
test/cat testA
test/dog testB
MAP
chmod 755 "$TMP"  # mktemp -d makes it 0700
mv "$TMP" "$OUT"
trap - EXIT
echo "done: $OUT"
