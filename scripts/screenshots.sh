#!/usr/bin/env bash
# Makes the README's screenshots: the real release binary in a real window under Xvfb (Mesa's
# lavapipe renders), with the tiny test model, the inkStyle test LoRA and the metric fixtures.
# Needs: xvfb, xdotool, imagemagick, mesa-vulkan-drivers; the formula Inception weights that
# `cargo test --test gui` leaves in target/tmp. Settings are seeded through eframe's storage file,
# which EASEL_HOME puts in its config folder.
# Everything the window shows lives under a neutral folder (/tmp/easel-demo, opened as the working
# folder) so no path of the machine that took them appears. EASEL_BIN picks the binary (default
# the release build; the dev build's `target/debug/easel` draws the same window).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bin=$(realpath "${EASEL_BIN:-target/release/easel}")
work=$(mktemp -d)
demo=/tmp/easel-demo
rm -rf "$demo"
mkdir -p "$demo/models/lora"
cp -r tests/fixtures/tiny-sd "$demo/models/tiny-sd"
cp tests/fixtures/lora/inkStyle.safetensors "$demo/models/lora/"
cp -r tests/fixtures/metrics/reference "$demo/reference"
cp target/tmp/formula-inception.safetensors "$demo/models/inception.safetensors"
export EASEL_HOME="$work/home" DISPLAY=:97
mkdir -p "$EASEL_HOME/config"
python3 - "$EASEL_HOME/config/app.ron" <<'PY'
import sys
out = sys.argv[1]
settings = (
    '(prompt:"a lighthouse at dusk, ink drawing", steps:8, width:128, height:128, seed:11, seed_locked:true, '
    'loras:[(path:"models/lora/inkStyle.safetensors", name:"inkStyle", enabled:true, '
    'weight:0.8, separate:false, unet_weight:0.8, text_weight:0.8)], '
    'metrics:(reference_dir:"reference", images_per_config:4, '
    'include_base:true, include_stack:false, sweep_weights:"0.5, 1", '
    'inception:"models/inception.safetensors"))'
)
escaped = settings.replace('\\', '\\\\').replace('"', '\\"')
open(out, "w").write('{"app": "' + escaped + '"}')
PY
Xvfb :97 -screen 0 1360x860x24 >/dev/null 2>&1 &
xvfb=$!
trap 'kill $xvfb $app 2>/dev/null || true; rm -rf "$work" "$demo"' EXIT
sleep 2
(cd "$demo" && exec "$bin" --model models/tiny-sd) >"$work/app.log" 2>&1 &
app=$!
sleep 8
xdotool mousemove 68 44 click 1      # Generate
sleep 8
import -window root assets/screenshot-image.png
xdotool mousemove 300 12 click 1     # the Metrics tab
sleep 1
xdotool mousemove 425 223 click 1    # Run comparison
sleep 100
import -window root assets/screenshot-metrics.png
echo "wrote assets/screenshot-image.png and assets/screenshot-metrics.png"
