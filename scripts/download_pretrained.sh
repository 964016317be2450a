#!/usr/bin/env bash
# Download the published CUT / FastCUT pretrained generators into <dest>/<name>/latest_net_G.pth.
#
#   bash scripts/download_pretrained.sh horse2zebra_cut_pretrained   # -> checkpoints/horse2zebra_cut_pretrained/
#   bash scripts/download_pretrained.sh all [dest]                    # all six from one download
#   i2i-test ckpt=checkpoints/horse2zebra_cut_pretrained/latest_net_G.pth data=horse2zebra
#
# Source: the single archive of the published CUT repository, http://efrosgans.eecs.berkeley.edu/CUT/
# pretrained_models.tar (about 260 MB, all six models), with the model names of its experiments/pretrained_launcher.py
# (taesungp/contrastive-unpaired-translation, README.md "Apply a pre-trained CUT model" and
# experiments/pretrained_launcher.py). The published README fetches it over http (over https the server has
# answered 404). The cityscapes models translate label maps to photos (data.direction=BtoA) and were trained on a
# resized, JPEG-compressed Cityscapes (see the published README).
#
# The archive is unpacked in a temporary folder next to the destination; only the requested model folder is
# moved into place (any prefix inside the archive is accepted as long as it holds <name>/latest_net_G.pth).
#
# Environment (optional):
#   I2I_PRETRAINED_URL_BASE  base URL instead of the Berkeley server (a mirror, or file:///path/to/folder)
#   I2I_CHECKPOINTS_DIR      default destination root instead of <repo>/checkpoints
set -euo pipefail

NAMES="horse2zebra_cut_pretrained horse2zebra_fastcut_pretrained cat2dog_cut_pretrained cat2dog_fastcut_pretrained"
NAMES+=" cityscapes_cut_pretrained cityscapes_fastcut_pretrained"
ARCHIVE_NAME="pretrained_models.tar"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
URL_BASE="${I2I_PRETRAINED_URL_BASE:-http://efrosgans.eecs.berkeley.edu/CUT}"

usage() {
  echo "usage: bash scripts/download_pretrained.sh <name | all> [dest]   (dest: default checkpoints/)" >&2
  echo "  names: $NAMES" >&2
}

if [[ $# -lt 1 || $# -gt 2 || "$1" == "-h" || "$1" == "--help" ]]; then usage; exit 2; fi
if [[ "$1" == "all" ]]; then
  WANT="$NAMES"
elif [[ " $NAMES " == *" $1 "* ]]; then
  WANT="$1"
else
  echo "download_pretrained.sh: error: unknown model '$1' — use one of: ${NAMES// /, } (or all)" >&2
  exit 2
fi
DEST_ROOT="${2:-${I2I_CHECKPOINTS_DIR:-$SCRIPT_DIR/../checkpoints}}"

TODO=""
for name in $WANT; do
  if [[ -f "$DEST_ROOT/$name/latest_net_G.pth" ]]; then
    echo "$DEST_ROOT/$name/latest_net_G.pth already exists — nothing to do for $name (delete it to download again)"
  else
    TODO="$TODO $name"
  fi
done
if [[ -z "$TODO" ]]; then exit 0; fi

mkdir -p "$DEST_ROOT"
TMP="$(mktemp -d "$DEST_ROOT/.pretrained.tmp.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
URL="$URL_BASE/$ARCHIVE_NAME"
ARCHIVE="$TMP/$ARCHIVE_NAME"
echo "downloading $URL"
if command -v curl >/dev/null 2>&1; then
  curl -fL --retry 3 --progress-bar -o "$ARCHIVE" "$URL"
elif command -v python3 >/dev/null 2>&1; then
  python3 -c 'import shutil, sys, urllib.request as u
shutil.copyfileobj(u.urlopen(sys.argv[1]), open(sys.argv[2], "wb"))' "$URL" "$ARCHIVE"
else
  echo "download_pretrained.sh: error: neither curl nor python3 is installed — install one of them" >&2; exit 1
fi
if command -v sha256sum >/dev/null 2>&1; then echo "sha256: $(sha256sum "$ARCHIVE" | cut -d' ' -f1)"; fi

mkdir "$TMP/x"
tar -xf "$ARCHIVE" -C "$TMP/x"
rm -f "$ARCHIVE"

for name in $TODO; do
  found="$(find "$TMP/x" -type f -path "*/$name/latest_net_G.pth" | head -n 1)"
  if [[ -z "$found" ]]; then
    echo "download_pretrained.sh: error: $URL has no $name/latest_net_G.pth — unexpected archive layout;" \
      "nothing was written for $name" >&2
    exit 1
  fi
  mkdir -p "$DEST_ROOT/$name"
  mv "$(dirname "$found")"/* "$DEST_ROOT/$name/"
  echo "done: $DEST_ROOT/$name/latest_net_G.pth"
done
echo "translate with: i2i-test ckpt=$DEST_ROOT/<name>/latest_net_G.pth data=<dataset> (or data=folder data.root=<dir>)"
