#!/usr/bin/env bash
# Re-measure the SafeEdit tables on this CPU (issue: SafeEdit numbers you can trust): every method of the
# paper's Table 1 and Table 4, judged by the probe and the keyword judge, KQA/Csum/over-refusal, on
#   1. the 7 official sample test records (the data folder), and
#   2. the 30 built test records (package data).
# Each method runs in its own process and the table resumes method by method: rerun to continue.
#   METHODS=vanilla,dinm bash scripts/remeasure_safeedit_cpu.sh      # a subset, in this order
# The tables are written where the package ships them (chapters 04 and 06 read them from there), with the
# markdown rendering (and the paper's numbers) next to each JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export HELPERS_SCALE=small
METHODS=${METHODS:-vanilla,dinm,self-reminder,ft-l,mend,sft,dpo,ext-sub,rlhf}
GENERAL_LIMIT=${GENERAL_LIMIT:-kqa=60,csum=10,over-refusal=30}
# the DINM learning rate is chosen beforehand on built validation records (chapter 04):
#   python -m helpers dinm-sweep --data built --split validation --limit 20 --grid none \
#     --config '{"lr": 0.001}' --config '{"lr": 0.005}' --max-new-tokens 32 --general kqa --general-limit kqa=60 \
#     --out helpers/resources/precomputed/dinm_lr_validation_cpu.json
for spec in "sample test safeedit_table_sample7_cpu" "built test safeedit_table_built_test_cpu"; do
  set -- $spec
  python -m helpers safeedit-table --data "$1" --split "$2" --methods "$METHODS" \
    --general kqa,csum,over-refusal --general-limit "$GENERAL_LIMIT" --out "helpers/resources/precomputed/$3.json"
done
