#!/usr/bin/env bash
# One prepared GPU check (issue 13): engine figures on CUDA, a CUDA training run through the CLI,
# compiled fit, and the fast test suite with CUDA present. Each part has its own time limit.
set -u
exec > >(tee $OUT/log.txt) 2>&1
export PYTHONUNBUFFERED=1 TORCHINDUCTOR_COMPILE_THREADS=16
echo "== machine"; nvidia-smi -L; python -c "import torch,timm,gradio,sys;print(sys.version.split()[0],torch.__version__,torch.version.cuda,timm.__version__,gradio.__version__)" 2>&1 | tail -2
python -c "import pycocoevalcap,safetensors,yaml,tensorboard;print('deps ok')" 2>&1 | tail -1
which java || echo "no java"
echo "== engine (cuda, eager + compile)"; date +%T
timeout 170 python -m bench.engine --device cuda --compile --steps 20 --out $OUT/engine_cuda.json 2>&1 | grep -v Warning | tail -60
echo "== fit on cuda through the CLI (scenes, tiny encoder), resume"; date +%T
D=/tmp/g; rm -rf $D
FIT="python -m train fit --data-root $D/scenes --cache-dir $D/cache --n-train 256 --n-val 16 --n-test 16 --scene-size 96 --min-freq 1 --no-progress --device cuda --encoder test-tiny --image-size 96 --batch-size 32 --embed-dim 32 --attention-dim 32 --decoder-dim 64 --beam-size 3"
timeout 90 $FIT --out $D/w --run-dir $D/run --epochs 2 2>&1 | tail -12
timeout 60 $FIT --out $D/w3 --run-dir $D/run --epochs 3 --resume 2>&1 | tail -4
cp -r $D/w $OUT/weights_cuda 2>/dev/null
echo "== fast tests with CUDA present"; date +%T
timeout 110 python -m pytest -q -x -m "not slow" tests/sat tests/train -p no:cacheprovider 2>&1 | tail -15
echo "== fit --compile on cuda"; date +%T
timeout 100 $FIT --out $D/wc --run-dir $D/runc --epochs 1 --compile 2>&1 | grep -v Warning | tail -6
echo "== done"; date +%T
