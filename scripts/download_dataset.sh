#!/usr/bin/env bash
# Download a CycleGAN/CUT unpaired dataset into datasets/<name>/ (trainA/ trainB/ testA/ testB/).
#
#   bash scripts/download_dataset.sh horse2zebra
#
# Source: https://efrosgans.eecs.berkeley.edu/cyclegan/datasets/<name>.zip (the URL of the published
# CUT script). The archive is downloaded and extracted inside a temporary folder next to the target
# and moved into place only after the layout check, so an interrupted run never leaves a
# half-extracted datasets/<name>/. Cityscapes and cat2dog (AFHQ) need manual steps: see
# datasets/README.md.
#
# Environment (optional):
#   I2I_DATASET_URL_BASE  base URL instead of the Berkeley server (e.g. a mirror, or file:///path)
#   I2I_DATASETS_DIR      destination root instead of <repo>/datasets
set -euo pipefail

NAMES="apple2orange summer2winter_yosemite horse2zebra monet2photo cezanne2photo ukiyoe2photo vangogh2photo maps facades iphone2dslr_flower grumpifycat mini"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
URL_BASE="${I2I_DATASET_URL_BASE:-https://efrosgans.eecs.berkeley.edu/cyclegan/datasets}"
DEST_ROOT="${I2I_DATASETS_DIR:-$SCRIPT_DIR/../datasets}"

usage() {
  echo "usage: bash scripts/download_dataset.sh <name>" >&2
  echo "  names: $NAMES" >&2
  echo "  cityscapes, cat2dog: manual preparation, see datasets/README.md" >&2
}

manual() {  # $1 = name
  case "$1" in
    cityscapes)
      echo "cityscapes cannot be downloaded automatically (license: register at https://www.cityscapes-dataset.com)."
      echo "  1. download gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip and unzip them;"
      echo "  2. python datasets/prepare_cityscapes.py --gtFine_dir <gtFine> --leftImg8bit_dir <leftImg8bit> --output_dir datasets/cityscapes"
      echo "     (trainA = photos, trainB = label maps; testA/testB from val; CUT's cityscapes models run BtoA: label -> photo)."
      echo "See datasets/README.md." ;;
    cat2dog)
      echo "cat2dog comes from AFHQ (StarGAN v2: https://github.com/clovaai/stargan-v2, 'bash download.sh afhq-dataset')."
      echo "  then: bash datasets/prepare_afhq_cat2dog.sh <afhq_dir> datasets/cat2dog"
      echo "     (train/cat -> trainA, train/dog -> trainB, test/cat -> testA, test/dog -> testB)."
      echo "See datasets/README.md." ;;
  esac
}

count_images() {  # $1 = folder
  find "$1" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' -o -iname '*.bmp' \
    -o -iname '*.tif' -o -iname '*.tiff' -o -iname '*.webp' \) | wc -l | tr -d ' '
}

if [[ $# -ne 1 || "$1" == "-h" || "$1" == "--help" ]]; then usage; exit 2; fi
NAME="$1"
if [[ "$NAME" == "cityscapes" || "$NAME" == "cat2dog" ]]; then manual "$NAME"; exit 1; fi
if [[ " $NAMES " != *" $NAME "* ]]; then echo "unknown dataset: '$NAME'" >&2; usage; exit 2; fi

mkdir -p "$DEST_ROOT"
DEST="$DEST_ROOT/$NAME"
if [[ -e "$DEST" ]]; then
  echo "$DEST already exists — nothing to do (delete it to download again)."
  exit 0
fi

TMP="$(mktemp -d "$DEST_ROOT/.$NAME.tmp.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
URL="$URL_BASE/$NAME.zip"
ZIP="$TMP/$NAME.zip"
echo "downloading $URL"
if command -v curl >/dev/null 2>&1; then
  curl -fL --retry 3 --progress-bar -o "$ZIP" "$URL"
elif command -v wget >/dev/null 2>&1; then
  wget -O "$ZIP" "$URL"
else
  echo "error: neither curl nor wget is installed — install one of them" >&2; exit 1
fi
if command -v sha256sum >/dev/null 2>&1; then echo "sha256: $(sha256sum "$ZIP" | cut -d' ' -f1)"; fi

mkdir "$TMP/x"
if command -v unzip >/dev/null 2>&1; then
  unzip -q "$ZIP" -d "$TMP/x"
else
  python3 -m zipfile -e "$ZIP" "$TMP/x"
fi

# The archives hold <name>/trainA/...; accept a flat archive too.
if [[ -d "$TMP/x/$NAME/trainA" ]]; then SRC="$TMP/x/$NAME"; else SRC="$TMP/x"; fi
for d in trainA trainB; do
  if [[ ! -d "$SRC/$d" || "$(count_images "$SRC/$d")" -eq 0 ]]; then
    echo "error: $URL has no images in $d/ — unexpected archive layout; nothing was written to $DEST" >&2
    exit 1
  fi
done
NO_TEST=""
for d in trainA trainB testA testB; do
  if [[ -d "$SRC/$d" ]]; then
    echo "  $d: $(count_images "$SRC/$d") images"
  else
    echo "  $d: missing"
    NO_TEST=1
  fi
done
mv "$SRC" "$DEST"
echo "done: $DEST"
if [[ -n "$NO_TEST" ]]; then
  echo "no test split (testA/ testB/): training on it runs without evaluation (a line at the start says so);"
  echo "  translate images with: i2i-test ckpt=<run dir> data=folder data.root=$DEST/trainA"
fi
