#!/usr/bin/env bash
# Fresh machine to results: set up .venv, train the `demo` experiment (CUT on the embedded synthetic domains,
# a few minutes on a 2-core CPU), translate its test images and say where everything is.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO/scripts/setup.sh"
cd "$REPO"
start=$(date +%s)
if [ -f checkpoints/demo/ckpt/last.pt ]; then
    train experiment=demo resume=auto "$@"      # finished (or interrupted) before: continue / no-op
else
    train experiment=demo "$@"
fi
i2i-test ckpt=checkpoints/demo data=synthetic out_dir=results/demo
python -m i2i.utils.demo_figure results/demo results/demo/demo.png
echo
echo "Demo finished in $(( $(date +%s) - start )) s."
echo "  training run:   checkpoints/demo/   (samples/: real A | fake B | real B | identity B; tensorboard --logdir checkpoints/demo/tb)"
echo "  translations:   results/demo/fake_B/*.png   gallery: results/demo/index.html"
echo "  summary figure: results/demo/demo.png   (inputs on top, translations below; blob overlap printed above)"
