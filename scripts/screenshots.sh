#!/usr/bin/env bash
# Makes the README's screenshots: the real release binary in a real window under Xvfb (Mesa's
# lavapipe renders), with the tiny test model, the inkStyle test LoRA and the metric fixtures.
# Needs: xvfb, xdotool, imagemagick, mesa-vulkan-drivers; the formula Inception weights that
# `cargo test --test gui` leaves in target/tmp. Settings are seeded through eframe's storage file.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d)
export EASEL_HOME="$work/home" XDG_DATA_HOME="$work/xdg" DISPLAY=:97
mkdir -p "$XDG_DATA_HOME/easel"
python3 - "$root" "$XDG_DATA_HOME/easel/app.ron" <<'PY'
import sys
root, out = sys.argv[1], sys.argv[2]
settings = (
    '(prompt:"a lighthouse at dusk, ink drawing", steps:8, width:128, height:128, seed:11, seed_locked:true, '
    f'loras:[(path:"{root}/tests/fixtures/lora/inkStyle.safetensors", name:"inkStyle", enabled:true, '
    'weight:0.8, separate:false, unet_weight:0.8, text_weight:0.8)], '
    f'metrics:(reference_dir:"{root}/tests/fixtures/metrics/reference", images_per_config:4, '
    'include_base:true, include_stack:false, sweep_weights:"0.5, 1", '
    f'inception:"{root}/target/tmp/formula-inception.safetensors"))'
)
escaped = settings.replace('\\', '\\\\').replace('"', '\\"')
open(out, "w").write('{"app": "' + escaped + '"}')
PY
Xvfb :97 -screen 0 1360x860x24 >/dev/null 2>&1 &
xvfb=$!
trap 'kill $xvfb $app 2>/dev/null || true; rm -rf "$work"' EXIT
sleep 2
target/release/easel --model tests/fixtures/tiny-sd >"$work/app.log" 2>&1 &
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
