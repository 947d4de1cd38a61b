#!/usr/bin/env bash
# Installs promptsieve with every extra into ./.venv on a fresh machine (idempotent).
# llama-cpp-python builds from source (about 6 minutes); its wheel is cached in
# $PROMPTSIEVE_WHEEL_CACHE, keyed by version and build flags, so later runs skip the build.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
WHEELS="${PROMPTSIEVE_WHEEL_CACHE:-$HOME/.cache/promptsieve-ci/wheels}"

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) \
      || echo "install.sh: could not install redis-server; its tests will be skipped" >&2
  fi
fi

# Headless Chromium (Debian's package) screenshots the savings report in tests/test_report.py.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "install.sh: could not install chromium; the report's browser test will be skipped" >&2
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q -U pip wheel
# The CPU build of torch that lies on disk; an unconstrained torch pulls a multi-GB CUDA build.
python -m pip install -q torch==2.13.0
# llama-cpp-python, pinned, built for this CPU's vector extensions but never AMX: a native
# (-march=native) build on a CPU that reports AMX died with a general-protection fault in
# libggml-cpu at the first decode of every model (seen on this project's 2-core VMs). Measured
# there, prompt processing of Qwen2.5-Coder-1.5B: AVX2 31 tok/s, with the AVX-512 flags 53 tok/s.
# The wheel cache is keyed by version and flags; --no-cache-dir, because pip's own wheel cache
# ignores CMAKE_ARGS and would hand back a build made with other flags.
LLAMA_VERSION=0.3.36
LLAMA_CMAKE="-DGGML_NATIVE=OFF"
for pair in avx512f:AVX512 avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16 \
  avx_vnni:AVX_VNNI; do
  if grep -qw "${pair%%:*}" /proc/cpuinfo 2>/dev/null; then
    LLAMA_CMAKE="$LLAMA_CMAKE -DGGML_${pair##*:}=ON"
  fi
done
LLAMA_WHEELS="$WHEELS/llama-cpp-python-$LLAMA_VERSION-$(printf %s "$LLAMA_CMAKE" | sha256sum | cut -c1-12)"
if ! ls "$LLAMA_WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
  echo "install.sh: building llama-cpp-python $LLAMA_VERSION from source (about 6-10 minutes;" \
    "CMAKE_ARGS=$LLAMA_CMAKE)..."
  mkdir -p "$LLAMA_WHEELS"
  CMAKE_ARGS="$LLAMA_CMAKE" python -m pip wheel -q --no-cache-dir --no-deps -w "$LLAMA_WHEELS" \
    "llama-cpp-python==$LLAMA_VERSION"
fi
python -m pip install -q --find-links "$LLAMA_WHEELS" "llama-cpp-python[server]==$LLAMA_VERSION" \
  -e ".[cpu,export,openai,anthropic,litellm,langchain,redis,report,otel,local,bench,dev]"
# An existing venv may hold a llama-cpp-python of the same version built otherwise (pip keeps
# it): install this wheel over it once.
LLAMA_WHL=$(ls "$LLAMA_WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl | head -1)
if [ "$(cat .venv/.llama-wheel 2>/dev/null)" != "$LLAMA_WHL" ]; then
  python -m pip install -q --no-deps --force-reinstall "$LLAMA_WHL"
  echo "$LLAMA_WHL" > .venv/.llama-wheel
fi

# BIG-bench task data for the benchmark suites: the bigbench==1.0.0 sdist (about 360 MB), fetched
# once into promptsieve's cache, keyed by version (never pip-installed: its dependencies are heavy).
# The index stopped listing it on 2026-12-05: only a machine that already holds it has it.
BIGBENCH="${PROMPTSIEVE_CACHE_DIR:-$HOME/.cache/promptsieve}/registry/bigbench-1.0.0"
if [ ! -f "$BIGBENCH/bigbench-1.0.0.tar.gz" ]; then
  mkdir -p "$BIGBENCH"
  CI_COPY="$HOME/.cache/promptsieve-ci/registry/bigbench-1.0.0/bigbench-1.0.0.tar.gz"
  if [ -f "$CI_COPY" ]; then
    ln -f "$CI_COPY" "$BIGBENCH/" 2>/dev/null || cp "$CI_COPY" "$BIGBENCH/"
  else
    python -m benchmarks.bigbench.fetch >/dev/null 2>&1 \
      || echo "install.sh: note: no bigbench==1.0.0 here, and the package index stopped listing" \
        "it on 2026-12-05; the demo does not need it, the tests use synthetic task files, and" \
        "the benchmark's suites need a copy (README: \"The sdist is gone from the index\")" >&2
  fi
fi

# The LiteLLM gateway runs in its own environment (litellm[proxy] pins packages the main one
# must not share), with promptsieve[cpu,redis] and no torch; tests/test_litellm_proxy.py
# starts it with promptsieve's hook. About 5 minutes the first time, seconds after.
[ -x .venv-litellm/bin/python ] || python3 -m venv .venv-litellm
.venv-litellm/bin/python -m pip install -q -U pip
.venv-litellm/bin/python -m pip install -q "litellm[proxy]>=1.60" -e ".[cpu,redis]" \
  || echo "install.sh: could not install the LiteLLM proxy; its gateway test will be skipped" >&2
