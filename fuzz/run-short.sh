#!/usr/bin/env bash
# Short, bounded fuzzing run for CI: builds every fuzz target and runs each
# one for FUZZ_SECONDS (default 20) seconds from the committed corpus plus the
# regression inputs. Fails if any target crashes, panics, leaks, times out or
# fails to build.
#
# Builds optimised, with debug assertions and overflow checks on (`-a`, which
# is also cargo-fuzz's default without `-O`), so an overflow is a crash too.
#
# Works with the stable toolchain: cargo-fuzz passes nightly-only flags
# (-Zsanitizer=..., -Cpasses=sancov-module, ...), and RUSTC_BOOTSTRAP=1 lets
# a stable rustc accept them. Installs cargo-fuzz when it is missing.
#
#   fuzz/run-short.sh                      # every target, 20 s each
#   FUZZ_SECONDS=60 fuzz/run-short.sh canonical_hash
#   FUZZ_SANITIZER=none fuzz/run-short.sh  # without AddressSanitizer
set -euo pipefail
cd "$(dirname "$0")"

export RUSTC_BOOTSTRAP=1
seconds=${FUZZ_SECONDS:-20}
sanitizer=${FUZZ_SANITIZER:-address}
cargo_fuzz_version=0.13.2

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "=== installing cargo-fuzz $cargo_fuzz_version"
    cargo install --quiet --locked cargo-fuzz --version "$cargo_fuzz_version"
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

echo "=== building ${targets[*]} (sanitizer: $sanitizer)"
build_start=$SECONDS
cargo fuzz build --debug-assertions --sanitizer "$sanitizer"
echo "=== built in $((SECONDS - build_start)) s"

# New inputs go to a scratch corpus, so the committed one stays as it is.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

failed=()
for target in "${targets[@]}"; do
    dirs=("$scratch/$target")
    mkdir -p "$scratch/$target"
    for dir in "corpus/$target" "regressions/$target"; do
        if [ -d "$dir" ]; then
            dirs+=("$dir")
        fi
    done
    dict=()
    case $target in
        canonical_hash | response_body) dict=(-dict=dicts/json.dict) ;;
        host_record) dict=(-dict=dicts/host_record.dict) ;;
        pem_loading) dict=(-dict=dicts/pem.dict) ;;
    esac
    echo "=== $target: ${seconds} s from ${dirs[*]:1}"
    if cargo fuzz run --debug-assertions --sanitizer "$sanitizer" "$target" "${dirs[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 "${dict[@]}" 2>"$scratch/$target.log"; then
        grep -E '^(#[0-9]+[[:space:]]+DONE|Done )' "$scratch/$target.log" || true
        echo "=== $target passed"
    else
        # The panic or sanitizer report first, then libFuzzer's summary.
        grep -m 3 -A 3 -E 'panicked at|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)' \
            "$scratch/$target.log" || true
        echo "..."
        tail -n 25 "$scratch/$target.log"
        echo "=== $target FAILED (artifacts in fuzz/artifacts/$target/)"
        failed+=("$target")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "=== fuzzing failed: ${failed[*]}"
    exit 1
fi
echo "=== fuzzing passed: ${targets[*]}"
