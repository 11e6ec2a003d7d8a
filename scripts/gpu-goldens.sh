#!/usr/bin/env bash
# Float32 transformers goldens for the committed tiny checkpoints (run on the GPU machine, which has
# torch + transformers). Needs the oracle scripts copied to .oracle/ (from ../shared/oracle).
set -euo pipefail
out=${OUT:-/tmp/goldens}
mkdir -p "$out"
for m in tests/data/golden/*/; do
  name=$(basename "$m")
  python3 .oracle/dequant_hf.py "$m" /tmp/$name-f32
  python3 .oracle/hf_logits.py /tmp/$name-f32 --tokens "$(cat $m/tokens.txt)" --device cuda --out "$out/$name.npy"
  python3 .oracle/np_ref.py "$m" --tokens "$(cat $m/tokens.txt)" --out "$out/$name.npref.npy"
  python3 -c "import numpy as np; a=np.load('$out/$name.npy'); b=np.load('$out/$name.npref.npy'); print('$name', a.shape, 'max rel vs np_ref', float(np.abs(a-b).max()/np.abs(b).max()))"
done
