#!/usr/bin/env bash
# The torch range difffit declares, tested at its ends: each torch version gets its own
# virtual environment (build/torch-range/torch-VERSION, made by `make torch`), difffit is
# installed there from one wheel built once (the extension does not link libtorch, so one
# build serves every torch), and the op tests (tests/test_ops.py) and `difffit demo --quick`
# run in it.
#
#   tools/torch_range.sh                  # the oldest torch pyproject.toml allows, and the pin
#   tools/torch_range.sh 2.7.1 2.10.0     # other versions
#
# Settings (environment): TORCH_INDEX and TORCH_LOCAL as in the Makefile (by default CPU
# builds from the PyTorch CPU index; where it cannot be reached, TORCH_INDEX= TORCH_LOCAL=
# takes PyPI's build, on Linux x86-64 a CUDA build of several GB); PYTHON (the interpreter
# that creates the environments, python3); DIFFFIT_CUDA (OFF here unless set: the op tests
# run on the CPU); KEEP=1 keeps the environments (removed after a passing version otherwise).
# Exit status 0 when every version passes.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/build/torch-range
mkdir -p "$OUT"

min=$(sed -n 's/^ *"torch>=\([0-9.]*\)".*/\1/p' pyproject.toml)
pin=$(sed -n 's/^TORCH_DEFAULT := *//p' Makefile)
[[ $min == *.*.* ]] || min=$min.0
versions=("$@")
[[ ${#versions[@]} -gt 0 ]] || versions=("$min" "$pin")
echo "torch range: declared torch>=${min%.0}; testing ${versions[*]}"

# One wheel, built in an environment of its own (no torch needed to build).
export DIFFFIT_CUDA=${DIFFFIT_CUDA:-OFF}
PYTHON=${PYTHON:-python3}
if [[ ! -x $OUT/build-env/bin/python ]]; then
  "$PYTHON" -m venv "$OUT/build-env"
fi
"$OUT/build-env/bin/python" -m pip install --quiet "scikit-build-core>=0.10" "pybind11>=2.12" cmake ninja
rm -rf "$OUT/wheel"
echo "== building the wheel (DIFFFIT_CUDA=$DIFFFIT_CUDA)"
"$OUT/build-env/bin/python" -m pip wheel --quiet --no-build-isolation --no-deps -w "$OUT/wheel" .
wheel=$(ls "$OUT"/wheel/difffit-*.whl)

# The wheel's requirements but torch, with its test extra, one a line.
requirements() {
  "$PYTHON" - "$1" <<'EOF'
import re, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
for line in z.read(meta).decode().splitlines():
    if not line.startswith("Requires-Dist:"):
        continue
    req, _, marker = line.split(":", 1)[1].strip().partition(";")
    extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)", marker)
    if re.match(r"torch\b", req) or (extra and extra.group(1) != "test"):
        continue
    print(req.strip())
EOF
}

declare -A result
status=0
for v in "${versions[@]}"; do
  env_dir=$OUT/torch-$v
  log=$OUT/torch-$v.log
  echo "== torch $v: environment $env_dir (log $log)"
  rm -rf "$env_dir"
  ok=yes
  {
    make --no-print-directory torch VENV="$env_dir" TORCH="$v" PYTHON="$PYTHON" &&
    # difffit without its torch requirement (pip would replace a torch older than the
    # declared minimum), then its other requirements and the test extra.
    "$env_dir/bin/python" -m pip install --quiet --no-deps "$wheel" &&
    "$env_dir/bin/python" -m pip install --quiet $(requirements "$wheel") &&
    "$env_dir/bin/python" -c 'import sys, torch
print("python", sys.version.split()[0], "torch", torch.__version__)
v = torch.__version__.split("+")[0]
sys.exit(None if v == sys.argv[1] else f"torch {v} is installed, not {sys.argv[1]}")' "$v" &&
    "$env_dir/bin/python" -c 'import difffit.ops' &&
    "$env_dir/bin/python" -m pytest -q -p no:cacheprovider tests/test_ops.py &&
    (cd /tmp && "$env_dir/bin/difffit" demo --quick)
  } >"$log" 2>&1 || ok=no
  got=$("$env_dir/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo "not installed")
  summary=$(grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed|error)' "$log" | tail -1 | tr -d '=' | xargs || true)
  demo=$(grep -E '^demo: recovered' "$log" | tail -1 || true)
  if [[ $ok == yes ]]; then
    result[$v]="PASS  torch $got: $summary; $demo"
    [[ ${KEEP:-0} == 1 ]] || rm -rf "$env_dir"
  else
    result[$v]="FAIL  torch $got: ${summary:-see $log}"
    status=1
    if grep -q "No matching distribution found for torch==" "$log"; then
      result[$v]+=" (torch==$v not found: is the CPU index reachable? TORCH_INDEX= TORCH_LOCAL= takes PyPI's build)"
    fi
    tail -20 "$log" | sed 's/^/    /'
  fi
  echo "   ${result[$v]}"
done

echo
echo "torch range summary (python $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')):"
for v in "${versions[@]}"; do echo "  $v: ${result[$v]}"; done
exit $status
