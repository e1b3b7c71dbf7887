#!/usr/bin/env bash
# The GPU path, in under 5 minutes on one GPU:
#   1. the test suite's device tests and the solver, hypergradient and hyperparameter suites on CUDA
#      (pytest --device cuda: CUDA is torch's default device in every test);
#   2. the hypergradient speed benchmark at 3M and 30M parameters against TorchOpt, Betty and higher
#      (implicit Neumann / CG 10, unrolled 10, and the equal-accuracy table);
#   3. the joint-training cost of the ift-cost experiment (plain, decays per layer, decays per weight).
# Results go to $OUT (default benchmarks/results) as *_cuda.{json,md,png}; a step that fails is reported
# and the others still run; the exit status is 1 if any failed.
#
#   bash benchmarks/gpu_check.sh            # PYTHON=... OUT=... DEVICE=cuda:1 to change them
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-benchmarks/results}
DEVICE=${DEVICE:-cuda}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
status=0
step() {
  local name=$1
  shift
  local start=$SECONDS
  echo "== $name: $*"
  if "$@"; then echo "== $name: ok ($((SECONDS - start)) s)"; else echo "== $name: FAILED ($((SECONDS - start)) s)"; status=1; fi
}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: nothing to check')" || exit 1
"$PY" -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"
step tests "$PY" -m pytest -q -m "not slow" -p no:cacheprovider --device "$DEVICE" \
  tests/test_device.py tests/linalg tests/hypergrad tests/hparams tests/test_autodiff.py tests/test_gauss_newton.py
step speed "$PY" benchmarks/hypergrad_speed.py --device "$DEVICE" --sizes 3M 30M --unrolls 10 --repeats 3 --out "$OUT"
step joint-cost "$PY" benchmarks/joint_cost.py --device "$DEVICE" --repeats 3 --out "$OUT"
echo "== total $SECONDS s"
exit $status
