#!/usr/bin/env bash
# The device check on a machine that has the platform's torch and no package index:
# installs the wheels carried in .whl/ (bench/README.md: how to fill it), then runs every
# section of bench/gpu_check.py within 9.5 minutes, the report to "$OUT/gpu-check.md".
#   OUT=/some/folder bash bench/device_run.sh        # from anywhere; DEVICE=cpu: dry run
# Extra arguments go to the check (e.g. --only pesg_parity).
set -euo pipefail
: "${OUT:?set OUT to the folder the report goes to}"
OUT=$(realpath -m "$OUT")  # before the cd: a relative OUT means the caller's folder
cd "$(dirname "$0")/.."
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
WHL=${WHL:-.whl}  # the carried wheels' folder
# the pinned wheels bench/README.md lists; everything else (torch, timm, OpenCV, numpy,
# pandas, scikit-learn) is the platform's
WHEELS=(albumentations==2.0.8 albucore==0.0.24 pydantic==2.14.4 pydantic-core==2.50.5
  annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
  stringzilla==5.3.2 simsimd==6.5.16)
mkdir -p "$OUT"
if compgen -G "$WHL/*.whl" >/dev/null; then
  # into a folder of their own, without dependencies: nothing of the platform's is
  # replaced, and an externally managed interpreter (PEP 668) does not refuse
  SITE=$(mktemp -d)
  "$PY" -m pip install -q --no-index --find-links "$WHL" --no-deps --target "$SITE" "${WHEELS[@]}"
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "device_run: no wheels in $WHL/: the sections that augment need albumentations" >&2
fi
export DEEPAUC_PROGRESS=0
# 540 s for the sections, a hard stop at 560 s: the whole run, the wheels' install
# included, stays inside 10 minutes (one device command's limit)
timeout -k 5 560 "$PY" bench/gpu_check.py --device "$DEVICE" --out "$OUT/gpu-check.md" \
  --budget-s 540 "$@"
