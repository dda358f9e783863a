#!/usr/bin/env bash
# gpu-bundle.sh — pack a GPU build made HERE (Debian 12, CUDA toolkit, no GPU)
# for a GPU machine that has the driver and the CUDA libraries but none of
# our Debian packages (gRPC, OpenBLAS, protobuf-c, cJSON, ...) and no
# network: the lent device machines of this workplace. Builds $BUILD with
# TC_CUDA=ON, then writes .gpu-bundle/bundle.tar.xz (git-ignored; xz keeps
# it under the device tool's 64 MiB) holding:
#   build-gpu/   the binaries, in the build tree's layout (tconstd finds
#                tconst-worker beside it or in worker/)
#   lib/         every shared library they load except glibc, libstdc++,
#                libgcc_s and the big CUDA ones (cuBLAS, cuBLASLt, NCCL),
#                which scripts/gpu-run-bundle.sh finds on the GPU machine
#   cudart/      the CUDA runtime, a fallback: the machine's comes first
#   stubs/       the e2e suite's Python gRPC stubs (TC_E2E_STUBS), since the
#                GPU machine has grpcio but no protoc
#   commit       the tree it was built from: `git describe --always --dirty`,
#                and for a dirty tree a hash of `git diff HEAD` and of the
#                untracked files (gpu-run-bundle.sh prints it in summary.txt)
# Only the targets gpu-run-bundle.sh runs are built ($targets below).
# Then `bash scripts/gpu-run-bundle.sh` there (carry .gpu-bundle).
# Knobs: BUILD (default build-gpu), CUDA_ARCH (default "80;90"), JOBS,
# BUNDLE (default .gpu-bundle/bundle.tar.xz; another name under .gpu-bundle/
# keeps the first: e.g. BUILD=build-gpu80 CUDA_ARCH=80-virtual
# BUNDLE=.gpu-bundle/sm80.tar.xz, the sm_80 code as PTX that an sm_90
# device JIT-compiles, so its sm_80 paths run there).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-gpu}
BUNDLE=${BUNDLE:-.gpu-bundle/bundle.tar.xz}
case $BUNDLE in .gpu-bundle/*.tar.xz) ;; *) echo "gpu-bundle.sh: BUNDLE '$BUNDLE': expected .gpu-bundle/NAME.tar.xz" >&2; exit 2 ;; esac
CUDA_ARCH=${CUDA_ARCH:-80;90}
D=$(mktemp -d)/bundle
trap 'rm -rf "$(dirname "$D")"' EXIT
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTC_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCH" >/dev/null
fi
targets="tconstd tconst tconst-cuda tconst-worker test_backend_ops_gpu test_gpu_parity bench_persist test_nccl_init_timeout test_nccl_transport"
# shellcheck disable=SC2086
cmake --build "$BUILD" -j "${JOBS:-$(nproc)}" --target $targets >/dev/null
mkdir -p "$D/build-gpu/worker" "$D/build-gpu/tests/gpu" "$D/build-gpu/bench" "$D/lib" "$D/cudart" "$D/stubs"
bins="tconstd tconst tconst-cuda worker/tconst-worker tests/gpu/test_backend_ops_gpu tests/gpu/test_gpu_parity bench/bench_persist worker/test_nccl_init_timeout worker/test_nccl_transport"
for b in $bins; do
    [ -x "$BUILD/$b" ] || { echo "gpu-bundle.sh: $BUILD/$b missing (built with TC_CUDA=ON?)" >&2; exit 1; }
    cp "$BUILD/$b" "$D/build-gpu/$b"
    # keep the debug info out: it is most of the size
    strip --strip-debug "$D/build-gpu/$b"
done
for b in $bins; do ldd "$BUILD/$b"; done | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u |
while read -r name path; do
    case "$name" in
    libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|ld-linux*|libgcc_s.so.*|libstdc++.so.*) ;;
    libcublas.so.*|libcublasLt.so.*|libnccl.so.*) ;;
    libcudart.so.*) cp -L "$path" "$D/cudart/$name" ;;
    *) cp -L "$path" "$D/lib/$name" ;;
    esac
done
strip --strip-unneeded "$D"/lib/*.so* "$D"/cudart/*.so* 2>/dev/null || true
# the GPT-2 vocabulary for the e2e tests that need text (stage e2egpt2)
gpt2=$BUILD/tokenizer/gpt2
[ -f "$gpt2/encoder.json" ] || (cd "$BUILD" && ctest -R tokenizer.fetch_gpt2 >/dev/null 2>&1) || true
if [ -f "$gpt2/encoder.json" ]; then mkdir -p "$D/gpt2" && cp "$gpt2"/encoder.json "$gpt2"/vocab.bpe "$D/gpt2/"
else echo "gpu-bundle.sh: no GPT-2 vocabulary in $gpt2 (ctest -R tokenizer.fetch_gpt2 makes it): stage e2egpt2 will fail" >&2; fi
protoc --python_out="$D/stubs" --grpc_python_out="$D/stubs" \
    --plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin -I proto proto/*.proto
label=$(git describe --always --dirty)
untracked=$(git ls-files --others --exclude-standard | wc -l)
if [ "$label" != "${label%-dirty}" ] || [ "$untracked" != 0 ]; then
    h=$({ git diff HEAD --binary; git ls-files -z --others --exclude-standard | xargs -0 -r sha256sum; } | sha256sum | cut -c1-12)
    label="$label (diff $h:$(git diff HEAD --shortstat | sed 's/,//g'), $untracked untracked)"
fi
echo "$label" >"$D/commit"
echo "bundle of $label"
mkdir -p .gpu-bundle && rm -f "$BUNDLE"
tar -C "$D" -cJf "$BUNDLE" .
du -sh "$D" "$BUNDLE"
