#!/usr/bin/env bash
# GPU check (run on the device machine, which has pip LibTorch 2.x with CUDA but no OpenCV / fmt / gtest):
# compiles the OpenCV-free areas (common, config, io, model, loss, optim, metric) and their tests against that
# LibTorch with the headers/static libs carried in build-optim-devdeps/, then runs the tests (CUDA tests
# included). Usage: bash scripts/device_check.sh   (set OUT to collect logs)
set -uo pipefail
cd "$(dirname "$0")/.."
D=build-optim-devdeps
OUT=${OUT:-/tmp/device_out}; mkdir -p "$OUT"
TORCH=$(python3 -c "import torch,os;print(os.path.dirname(torch.__file__))")
python3 -c "import torch;print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
B=/tmp/flbuild; mkdir -p $B
printf '#define FEATLEARN_SOURCE_DIR "%s"\n#define FEATLEARN_BINARY_DIR "%s"\n' "$PWD" "$B" > $B/defs.h
FLAGS="-std=c++17 -O1 -w -DFMT_HEADER_ONLY -include $B/defs.h \
  -Iinclude -I$D/include -I$TORCH/include -I$TORCH/include/torch/csrc/api/include"
# c10d (docs/distributed.md): Gloo when the pip torch ships gloo's headers, NCCL when it has c10d's NCCL group.
[ -f $TORCH/include/gloo/config.h ] && FLAGS="$FLAGS -DUSE_C10D_GLOO -DUSE_DISTRIBUTED -DFEATLEARN_HAVE_GLOO"
[ -f $TORCH/include/gloo/config.h ] && [ -f $TORCH/include/torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp ] && \
  FLAGS="$FLAGS -DUSE_C10D_NCCL -DFEATLEARN_HAVE_NCCL"
echo "c10d flags: $(echo $FLAGS | grep -o '\-DFEATLEARN_HAVE_[A-Z]*' | tr '\n' ' ')"
SRCS=$(ls src/{common,config,io,model,loss,optim,metric,dist}/*.cpp tests/{model,io,loss,optim,metric}/*.cpp tests/dist/tools/dist_worker.cpp)
for f in $SRCS; do
  o=$B/$(echo $f | tr / _).o
  echo "g++ $FLAGS -c $f -o $o > $o.log 2>&1 || { echo FAILED $f; cat $o.log | grep -m10 -A3 error; }"
done > $B/jobs.txt
xargs -P "$(nproc)" -I{} sh -c '{}' < $B/jobs.txt 2>&1 | tee $OUT/compile.log
LIBOBJ=$(ls $B/src_*.o)
# The NCCL check: a 1-process NCCL group runs a training step on CUDA (tests/dist/tools/dist_worker.cpp).
LINK="$D/lib/libgtest_main.a $D/lib/libgtest.a $D/lib/libyaml-cpp.a -L$TORCH/lib -Wl,--no-as-needed -ltorch -ltorch_cuda -ltorch_cpu -lc10 -lc10_cuda -Wl,--as-needed -Wl,-rpath,$TORCH/lib -lpthread"
python3 tests/fixtures/make_fixtures.py --out $B/fixtures > $OUT/fixtures.log 2>&1 || echo "fixtures failed"
rc=0
if g++ $B/tests_dist_tools_dist_worker.cpp.o $LIBOBJ $LINK -o $B/dist_worker > $OUT/link_dist_worker.log 2>&1; then
  WORLD_SIZE=1 RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29511 $B/dist_worker nccl 2>&1 | tee $OUT/nccl.log
  grep -q "^OK nccl" $OUT/nccl.log || rc=1
else
  echo "LINK FAILED dist_worker"; head -20 $OUT/link_dist_worker.log; rc=1
fi
for area in model io loss optim metric; do
  g++ $B/tests_${area}_*.o $LIBOBJ $LINK -o $B/test_$area > $OUT/link_$area.log 2>&1 || { echo "LINK FAILED $area"; head -20 $OUT/link_$area.log; rc=1; continue; }
  (cd $B && FEATLEARN_BINARY_DIR=$B ./test_$area > $OUT/test_$area.log 2>&1); r=$?
  echo "test_$area: exit $r; $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' $OUT/test_$area.log | tr '\n' ' ')"
  [ $r -ne 0 ] && { grep -E '^\[  FAILED|Failure' -A3 $OUT/test_$area.log | head -30; rc=1; }
done
exit $rc
