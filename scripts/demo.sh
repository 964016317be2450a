#!/usr/bin/env bash
# Fresh machine to results: set up .venv, train the `demo` experiment (CUT on the embedded synthetic domains,
# a few minutes on a 2-core CPU), translate its test images, check the translation and say where everything is.
# Exits non-zero, with one FAILED line per missed criterion, when the translation misses a criterion.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
t0=$(date +%s)
source "$REPO/scripts/setup.sh"
cd "$REPO"
start=$(date +%s)
if [ -f checkpoints/demo/ckpt/last.pt ]; then
    train experiment=demo resume=auto "$@"      # finished (or interrupted) before: continue / no-op
else
    train experiment=demo "$@"
fi
i2i-test ckpt=checkpoints/demo data=synthetic out_dir=results/demo
echo
status=0
python -m i2i.utils.demo_check results/demo "${I2I_DATASETS_DIR:-datasets}/synthetic_blobs_s0_72/testB" || status=$?
python -m i2i.utils.demo_figure results/demo results/demo/demo.png
end=$(date +%s)
echo
echo "Demo finished in $(( end - start )) s (plus $(( start - t0 )) s of setup)."
echo "  training run:   checkpoints/demo/   (samples/: real A | fake B | real B; tensorboard --logdir checkpoints/demo/tb)"
echo "  translations:   results/demo/fake_B/*.png   gallery: results/demo/index.html"
echo "  summary figure: results/demo/demo.png   (inputs on top, translations below, criteria as the caption)"
echo "  criteria:       results/demo/criteria.json"
if [ "$status" -ne 0 ]; then
    echo "i2i: error: the demo translation missed criteria (FAILED lines above)" >&2
    exit "$status"
fi
