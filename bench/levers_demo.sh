#!/usr/bin/env bash
# Each optional lever (docs/pipeline.md) measured on the demo data: one RUN per lever, the
# demo's folds, seed and config with that one change, and one report comparing each with a
# baseline RUN of the unchanged configs trained the same way (same OOF rows, paired;
# reports/levers_demo.md). Every run predicts without TTA (tta.dihedral=1: the time goes to
# training) and uses one thread per process (OMP_NUM_THREADS=1), because CPU training is only
# repeatable at a fixed thread count. About 3 min per lever on 2 idle
# cores; the report is rewritten after each lever. LEVERS="blur ema" runs a subset.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
make --no-print-directory demo > /dev/null

declare -A LEVER_SETS=(
  [blur]="--set augment.blur=0.5"
  [noise]="--set augment.noise=0.5"
  [distortion]="--set augment.distortion=0.5"
  [clahe]="--set augment.clahe=0.5"
  [hair]="--set augment.hair=0.5"
  [first_place_augs]="--set augment.blur=0.5 --set augment.noise=0.5 --set augment.distortion=0.5 --set augment.clahe=0.5 --set augment.hair=0.5 --set augment.hue_saturation=0.5"
  [warmup]="--set schedule.warmup_epochs=1"
  [ema]="--set train.ema_decay=0.99"
  [no_external]=""
  [aux9]=""
  [pseudo]=""
  [baseline]=""
)
# the auxiliary 9-class targets: their CE stage and both AUC-M stages from it, each compared
# with the demo's own model of that stage
AUX_MODELS="ce_aux9_lite0_64 aucm_aux9_melanoma_lite0_64:ce_aux9_lite0_64 aucm_aux9_multilabel_lite0_64:ce_aux9_lite0_64"
B=preds/demo_lv_baseline
declare -A AUX_BASE=(
  [ce_aux9_lite0_64]=${B}_ce_lite0_64
  [aucm_aux9_melanoma_lite0_64]=${B}_aucm_lite0_64
  [aucm_aux9_multilabel_lite0_64]=${B}_aucm_lite0_64
)
ORDER="baseline aux9 pseudo first_place_augs ema warmup no_external hair blur clahe distortion noise"
LEVERS=${LEVERS:-$ORDER}

BASE=${B}_ce_lite0_64
# the demo's own no-TTA CE (two threads) beside the baseline (one thread): the same config
preds=(preds/demo_meta_mlp preds/demo_lv_image_features_meta_mlp preds/demo_ce_lite0_64-notta)
[[ " $LEVERS " == *" baseline "* ]] || preds+=("${B}_ce_lite0_64" "${B}_aucm_lite0_64")
compare=(--compare preds/demo_meta_mlp preds/demo_lv_image_features_meta_mlp)
compare+=(--compare preds/demo_ce_lite0_64-notta "$BASE")
write_report() {
  $PY -m deepauc report --title "Levers on the demo (bench/levers_demo.sh)" --out reports/levers_demo.md \
    --folds folds/demo.csv --preds "${preds[@]}" "${compare[@]}" > /dev/null
}

# the metadata model with the image-size features (JPEG bytes, width, height)
echo "== image_features: deepauc meta ... --set image_features=true"
$PY -m deepauc meta --config configs/demo/meta_mlp.yaml --set train_csv=folds/demo.csv \
  --set test_csv=data/demo/test.csv --set image_root=data/demo --set test_image_root=data/demo/jpeg/test \
  --set image_features=true --set name=demo_lv_image_features_meta_mlp > /tmp/levers_meta.log

# pseudo-labelled test rows (fold k's from the baseline CE's fold-k model) in the AUC-M
# stage, started from the baseline's CE weights, against the baseline's AUC-M
pseudo_lever() {
  local s="--set data.train_csv=folds/demo_lv_baseline.csv --set data.test_csv=data/demo/test.csv"
  s="$s --set data.cache_dir=data/cache/demo --set n_folds=3 --set tta.dihedral=1"
  local p="--set name=demo_lv_pseudo_aucm_lite0_64 --set data.pseudo_csv=data/interim/demo_lv_pseudo.csv"
  p="$p --set model.init_from=models/demo_lv_baseline_ce_lite0_64"
  $PY -m deepauc pseudo --preds ${B}_ce_lite0_64 --out data/interim/demo_lv_pseudo.csv
  for k in 0 1 2; do
    # shellcheck disable=SC2086
    $PY -m deepauc train --config configs/demo/aucm_lite0_64.yaml --fold $k $s $p
  done
  # shellcheck disable=SC2086
  $PY -m deepauc predict --config configs/demo/aucm_lite0_64.yaml $s $p
}

for lever in $LEVERS; do
  if [[ $lever == pseudo ]]; then
    echo "== pseudo: deepauc pseudo --preds ${B}_ce_lite0_64, then AUC-M with data.pseudo_csv"
    pseudo_lever > /tmp/levers_pseudo.log 2>&1
    preds+=(preds/demo_lv_pseudo_aucm_lite0_64)
    compare+=(--compare ${B}_aucm_lite0_64 preds/demo_lv_pseudo_aucm_lite0_64)
    write_report
    continue
  fi
  run=demo_lv_$lever
  extra=()
  [[ $lever == no_external ]] && extra=(NO_EXTERNAL=1)
  sets="${LEVER_SETS[$lever]} --set tta.dihedral=1"
  models=ce_lite0_64
  [[ $lever == aux9 ]] && models=$AUX_MODELS
  [[ $lever == baseline ]] && models="ce_lite0_64 aucm_lite0_64:ce_lite0_64"
  echo "== $lever: make pipeline EXP=demo RUN=$run MODELS='$models' EXTRA_SETS='$sets' ${extra[*]}"
  make --no-print-directory pipeline EXP=demo RUN="$run" MODELS="$models" \
    EXTRA_SETS="$sets" "${extra[@]}" > "/tmp/levers_$lever.log"
  # without external rows the folds are dealt anew: the report refuses to pair runs of two
  # fold assignments, so this lever's AUC is in its own report (reports/cv_demo_lv_no_external.md)
  [[ $lever == no_external ]] && continue
  for m in $models; do
    stem=${m%%:*}
    if [[ $lever == baseline ]]; then
      preds+=("preds/${run}_$stem")
      continue
    fi
    base=$BASE
    [[ $lever == aux9 ]] && base=${AUX_BASE[$stem]}
    preds+=("preds/${run}_$stem")
    compare+=(--compare "$base" "preds/${run}_$stem")
  done
  write_report
done
write_report
echo "reports/levers_demo.md"
