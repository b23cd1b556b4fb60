#!/usr/bin/env bash
# Re-measure the SafeEdit tables on this CPU (issue: SafeEdit numbers you can trust): every method of the
# paper's Table 1 and Table 4, judged by the probe and the keyword judge, KQA/Csum/over-refusal, on
#   1. the 7 official sample test records (the data folder), and
#   2. the 30 built test records (package data).
# Each method runs in its own process and the table resumes method by method: rerun to continue.
#   METHODS=vanilla,dinm bash scripts/remeasure_safeedit_cpu.sh      # a subset, in this order
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export HELPERS_SCALE=small
METHODS=${METHODS:-vanilla,dinm,self-reminder,ft-l,mend,sft,dpo,ext-sub,rlhf}
GENERAL_LIMIT=${GENERAL_LIMIT:-kqa=60,csum=10,over-refusal=30}
for spec in "sample test safeedit_table_sample7_cpu" "built test safeedit_table_built_test_cpu"; do
  set -- $spec
  python -m helpers safeedit-table --data "$1" --split "$2" --methods "$METHODS" \
    --general kqa,csum,over-refusal --general-limit "$GENERAL_LIMIT" --out "results/$3.json"
done
