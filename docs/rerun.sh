#!/usr/bin/env bash
# Re-runs what docs/results.md reports, seeds 0-2 of every study into one experiment each (so the
# report's seed bootstrap applies), and rebuilds docs/figures/. Each run's wall time goes to
# runs/rerun-times.tsv. Usage: bash docs/rerun.sh [study ...]  (default: all, in the order below;
# the twins share their node store, so a later twin reuses the arms an earlier one trained).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs
times=runs/rerun-times.tsv
theory() {  # theory <name> [--set ...]: one output folder per seed (a theory study's summary is one seed's)
  local name=$1; shift
  for seed in 0 1 2; do
    local t0; t0=$(date +%s)
    python -m raysweep.main --config search_spaces/theory.yaml --set "name=$name-seed$seed" --set "seed=$seed" "$@"
    printf '%s\t%s\t%s\t%s\n' "$name" "$seed" "$(( $(date +%s) - t0 ))" "$(date -u +%FT%TZ)" >> "$times"
  done
  python -c "import json, sys; from analysis.figures import plot_theory
plot_theory(json.load(open(sys.argv[1]))).write_html(sys.argv[2], include_plotlyjs='cdn')" "runs/$name-seed0/theory.json" "docs/figures/$name.html"
}
run() {  # run <experiment name> <study file> [--set ...]
  local name=$1 file=$2; shift 2
  for seed in 0 1 2; do
    local t0; t0=$(date +%s)
    python -m raysweep.main --config "$file" --set "name=$name" --set "seed=$seed" "$@"
    printf '%s\t%s\t%s\t%s\n' "$name" "$seed" "$(( $(date +%s) - t0 ))" "$(date -u +%FT%TZ)" >> "$times"
  done
  # the tables docs/results.md quotes, kept beside the study's runs
  python -m analysis --tracking-uri "sqlite:///runs/$name/mlflow.db" --experiment "$name" \
    --out "docs/figures/$name" --plotlyjs cdn | tee "runs/$name/analysis.txt"
}
studies=("$@")
[ ${#studies[@]} -gt 0 ] || studies=(theory theory-rho05 lambda frontier replay-dropout lora compute-matched lambda-long frontier-long robustness)
for s in "${studies[@]}"; do
  case $s in
    theory) theory theory ;;
    theory-rho05) theory theory-rho05 --set theory.co_occurrence=0.5 \
        --set "theory.steps={pretrain: 3000, posttrain: 20000, finetune: 3000}" ;;
    lambda-long) run twin-lambda-long search_spaces/twins/lambda.yaml \
        --set "pretrain.mix_fraction=[0.0, 1.0]" --set posttrain.tokens=1440000 ;;
    frontier-long) run twin-frontier-long search_spaces/twins/frontier.yaml --set posttrain.tokens=1440000 ;;
    robustness)  # every convention variant and held-out slice; the variants read back with --robustness
      run twin-robustness search_spaces/twins/robustness.yaml
      python -m analysis --tracking-uri sqlite:///runs/twin-robustness/mlflow.db --experiment twin-robustness \
        --robustness --out docs/figures/twin-robustness --plotlyjs cdn | tee runs/twin-robustness/robustness.txt ;;
    *) run "twin-$s" "search_spaces/twins/$s.yaml" ;;
  esac
done
