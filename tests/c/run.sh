#!/usr/bin/env bash
# tests/c/run.sh -- the C ABI test suite, end to end.
#
#   bash tests/c/run.sh            (from anywhere; it cds to the repo root)
#
# Needs, besides a Rust toolchain (cargo) on PATH -- install in CI, not here:
#   apt-get install -y --no-install-recommends \
#       build-essential pkg-config cmake valgrind libasan8 libubsan1 libtsan2 clang
# (build-essential: gcc, g++, make, libc6-dev, binutils for nm; libasan8,
#  libubsan1, libtsan2: gcc's sanitizer runtimes -- on Debian 12 gcc-12
#  already pulls them in, listed so a slimmer image cannot miss them.)
#
# Environment:
#   CTEST_TARGET_DIR    cargo target dir of the installed C library
#                       (default target/c-abi)
#   STANDIN_TARGET_DIR  cargo target dir of the stand-in worker, built with
#                       the `testkit` feature -- kept apart so that feature
#                       never reaches the installed library
#                       (default target/testkit)
#   THREADS_CALLS       calls per thread for `threads` (default 1000); the
#                       valgrind run uses 50, ASan 200, TSan 200.
#
# Stages: install the library into a temp prefix; check the header against
# the library's exports and derive the coverage list boundary must meet;
# build examples-c through the installed pkg-config file (in a temp copy)
# and through the installed CMake package (shared and static);
# build tests/c; build and start the stand-in worker; run quickstart,
# quickstart-static, raii, raii-static (both builds), boundary, thread_exit,
# exact_answer, key_modes, log_events and threads; build tests/cxx (g++,
# clang++, ASan+UBSan, TSan; the compile-fail check) and run each, then the
# wrapper's overhead benchmark; start the swarm and run
# fleet (plain and under valgrind); valgrind memcheck over quickstart, raii,
# boundary, log_events and threads; an ASan+UBSan build
# of quickstart, boundary and threads; a TSan build of threads, preceded by
# a negative control (a deliberately racy build must be caught). Each stage
# prints a header; the first failure stops the run. The last line is
# "N passed, M failed" over the stages.
#
# Suppression files (each explains its evidence): valgrind.supp (a memcheck
# false positive in ring's AES-GCM assembly) and tsan.supp (reports from
# the uninstrumented Rust library, whose futex-based locks TSan cannot see).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

lib_target=${CTEST_TARGET_DIR:-target/c-abi}
standin_target=${STANDIN_TARGET_DIR:-target/testkit}
threads_calls=${THREADS_CALLS:-1000}
started_at=$(date +%s)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/decnet-ctest.XXXXXX")
prefix=$tmp/prefix
build=$tmp/build
work=$tmp/worker
mkdir -p "$build" "$work"
worker_pid=
swarm_pid=

passed=0
current=setup

on_exit() {
    local rc=$?
    if [[ -n $worker_pid ]] && kill -0 "$worker_pid" 2>/dev/null; then
        kill "$worker_pid" 2>/dev/null || true
        wait "$worker_pid" 2>/dev/null || true
    fi
    if [[ -n $swarm_pid ]] && kill -0 "$swarm_pid" 2>/dev/null; then
        kill "$swarm_pid" 2>/dev/null || true
        wait "$swarm_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
    if [[ $rc -ne 0 ]]; then
        echo
        echo "FAILED in stage: $current (exit $rc)"
        echo "$passed passed, 1 failed"
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# stage NAME COMMAND...: runs one stage; under `set -e` a failure inside
# COMMAND (a function included) ends the script through on_exit.
stage() {
    current=$1
    shift
    printf '\n=== [%d] %s\n' "$((passed + 1))" "$current"
    local t0=$SECONDS
    "$@"
    passed=$((passed + 1))
    printf -- '--- ok: %s (%ds)\n' "$current" "$((SECONDS - t0))"
}

# ---------------------------------------------------------------------------
install_library() {
    # The release profile strips symbols; keep them here so that memcheck
    # can apply valgrind.supp, whose entries name functions (the code is
    # the same: stripping only drops the symbol table; .ci/packaging checks
    # the stripped build users install).
    CARGO_PROFILE_RELEASE_STRIP=none make install-lib PREFIX="$prefix" TARGET_DIR="$lib_target"
    export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
    echo "pkg-config: decnet_agent_client $(pkg-config --modversion decnet_agent_client)"
    libdir=$(pkg-config --variable=libdir decnet_agent_client)
    cflags=$(pkg-config --cflags decnet_agent_client)
    libs=$(pkg-config --libs decnet_agent_client)
    header=$(pkg-config --variable=includedir decnet_agent_client)/decnet_agent_client.h
    local soname
    soname=$(objdump -p "$libdir/libdecnet_agent_client.so" | awk '$1 == "SONAME" { print $2 }')
    echo "SONAME: $soname"
    [[ $soname == libdecnet_agent_client.so.* && -e $libdir/$soname ]]
}

# One "KIND FUNCTION ARGUMENT" line per requirement of the header (see
# boundary.c): every function is called; every pointer argument is passed
# NULL; every `const char *` / `const char *const *` argument gets invalid
# UTF-8; every *_json argument malformed JSON; every enum-valued integer
# (hostname_verification, profile) an out-of-range value.
coverage_list() {
    awk '
        function emit(text,   open, head, words, n, name, params, list, count, i, p, arg) {
            open = index(text, "(")
            head = substr(text, 1, open - 1)
            n = split(head, words, /[ *]+/)
            name = words[n]
            if (name == "") name = words[n - 1]
            match(text, /\)[ \t]*;/)
            params = substr(text, open + 1, RSTART - open - 1)
            print "call " name " -"
            count = split(params, list, ",")
            for (i = 1; i <= count; i++) {
                p = list[i]
                gsub(/[ \t]+/, " ", p); sub(/^ /, "", p); sub(/ $/, "", p)
                if (p == "void" || p == "") continue
                arg = p; sub(/.*[ *]/, "", arg)
                if (p ~ /\*/) print "null " name " " arg
                if (p ~ /^const char \*(const \*)?[A-Za-z_0-9]+$/) print "utf8 " name " " arg
                if (arg ~ /_json$/ && p ~ /^const char \*/) print "json " name " " arg
                if (arg == "hostname_verification" || arg == "profile") print "range " name " " arg
            }
        }
        !inproto && /^[A-Za-z_][A-Za-z_0-9 *]*[ *]decnet_[a-z_0-9]+\(/ { inproto = 1; text = "" }
        inproto { text = text " " $0; if ($0 ~ /\)[ \t]*;/) { emit(text); inproto = 0 } }
    ' "$1"
}

check_header() {
    coverage=$tmp/coverage.txt
    coverage_list "$header" > "$coverage"
    local functions exported
    functions=$(awk '$1 == "call" { print $2 }' "$coverage" | sort)
    exported=$(nm -D --defined-only "$libdir/libdecnet_agent_client.so" | awk '$2 == "T" && $3 ~ /^decnet_/ { print $3 }' | sort)
    echo "header: $(wc -l <<< "$functions") functions, $(wc -l < "$coverage") coverage requirements"
    echo "library exports: $(wc -l <<< "$exported") decnet_* functions"
    if [[ $functions != "$exported" ]]; then
        echo "header and library exports differ:"
        diff <(echo "$functions") <(echo "$exported") || true
        return 1
    fi
    [[ $(wc -l <<< "$functions") -ge 30 ]]
}

build_examples() {
    mkdir -p "$build/examples-c"
    cp examples-c/Makefile examples-c/quickstart.c examples-c/raii.cpp "$build/examples-c/"
    make -C "$build/examples-c"
}

# The same examples through the installed CMake package (examples-c/CMakeLists.txt):
# the shared programs must load the installed library, the static ones none.
build_examples_cmake() {
    local out=$build/examples-cmake
    cmake -S examples-c -B "$out" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release
    cmake --build "$out" -j 2
    local program deps
    # ldd's output is captured first: `ldd | grep -q` under pipefail fails
    # when grep's early exit kills ldd with SIGPIPE.
    for program in quickstart raii; do
        deps=$(ldd "$out/$program")
        if ! grep -q "libdecnet_agent_client.so.0 => $libdir/" <<<"$deps"; then
            echo "$program does not load $libdir/libdecnet_agent_client.so.0:"; ldd "$out/$program"; return 1
        fi
        deps=$(ldd "$out/$program-static" || true)
        if grep -q libdecnet_agent_client <<<"$deps"; then
            echo "$program-static loads the shared library:"; ldd "$out/$program-static"; return 1
        fi
    done
}

run_cmake_examples() {
    local program
    for program in quickstart quickstart-static raii raii-static; do
        echo "--- $program (CMake)"
        "$build/examples-cmake/$program" "$ca_dir" "$hosts/ok.json"
    done
}

build_tests() {
    local warn=(-std=c11 -Wall -Wextra -Werror -pedantic -O1 -g)
    # shellcheck disable=SC2086  # pkg-config output is a word list
    {
        cc "${warn[@]}" $cflags -pthread -o "$build/boundary" tests/c/boundary.c $libs -Wl,-rpath,"$libdir"
        cc "${warn[@]}" $cflags -pthread -o "$build/threads" tests/c/threads.c $libs -Wl,-rpath,"$libdir"
        cc "${warn[@]}" $cflags -pthread -o "$build/thread_exit" tests/c/thread_exit.c $libs -Wl,-rpath,"$libdir"
        cc "${warn[@]}" $cflags -o "$build/exact_answer" tests/c/exact_answer.c $libs -Wl,-rpath,"$libdir"
        cc "${warn[@]}" $cflags -o "$build/key_modes" tests/c/key_modes.c $libs -Wl,-rpath,"$libdir"
        cc "${warn[@]}" $cflags -o "$build/log_events" tests/c/log_events.c $libs -Wl,-rpath,"$libdir"
        cc "${warn[@]}" $cflags -pthread -o "$build/fleet" tests/c/fleet.c $libs -Wl,-rpath,"$libdir"
    }
}

build_standin() {
    cargo build --release --features testkit --example stand_in_worker --example swarm --target-dir "$standin_target"
}

# wait_ready WHAT PID DIR LOG: waits up to 60 s for the server process PID
# to create DIR/ready; fails, showing LOG, if it exits or times out first.
wait_ready() {
    local what=$1 pid=$2 dir=$3 log=$4 waited=0
    until [[ -e $dir/ready ]]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$what exited:"; cat "$log"; return 1
        fi
        if (( waited >= 600 )); then
            echo "$what not ready after 60 s"; return 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
}

start_standin() {
    "$standin_target/release/examples/stand_in_worker" "$work" > "$tmp/worker.log" 2>&1 &
    worker_pid=$!
    wait_ready "stand-in worker" "$worker_pid" "$work" "$tmp/worker.log"
    ca_dir=$work/ca
    hosts=$work/hosts
    echo "stand-in worker pid $worker_pid ready: $(cd "$hosts" && echo *.json)"
    cat "$hosts/ok.json"; echo
}

# 40 stand-ins, each with its own certificate and pin; 4 of each fault.
start_swarm() {
    swarm_dir=$tmp/swarm
    mkdir -p "$swarm_dir"
    "$standin_target/release/examples/swarm" "$swarm_dir" 40 --stall 4 --stall-secs 10 \
        --wrong-cert 4 --refuse 4 --server-error 4 > "$tmp/swarm.log" 2>&1 &
    swarm_pid=$!
    wait_ready "swarm" "$swarm_pid" "$swarm_dir" "$tmp/swarm.log"
    echo "swarm pid $swarm_pid ready: $(ls "$swarm_dir/hosts" | wc -l) stand-ins"
}

run_example() {
    "$build/examples-c/$1" "$ca_dir" "$hosts/ok.json"
}

run_boundary() {
    BOUNDARY_COVERAGE=$coverage DECNET_EXPECTED_VERSION=$(pkg-config --modversion decnet_agent_client) \
        "$@" "$ca_dir" "$hosts"
}

# valgrind.supp: one false positive in ring's AES-GCM assembly (see there).
vg() {
    valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect \
        --show-leak-kinds=definite,indirect --track-origins=yes --num-callers=30 \
        --suppressions="$here/valgrind.supp" "$@"
}

build_asan() {
    local flags=(-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
    # shellcheck disable=SC2086
    {
        cc -std=c11 -Wall -Wextra -Werror -pedantic "${flags[@]}" $cflags -o "$build/quickstart-asan" \
            "$build/examples-c/quickstart.c" $libs -Wl,-rpath,"$libdir"
        cc -std=c11 -Wall -Wextra -Werror -pedantic "${flags[@]}" $cflags -pthread -o "$build/boundary-asan" \
            tests/c/boundary.c $libs -Wl,-rpath,"$libdir"
        cc -std=c11 -Wall -Wextra -Werror -pedantic "${flags[@]}" $cflags -pthread -o "$build/threads-asan" \
            tests/c/threads.c $libs -Wl,-rpath,"$libdir"
    }
}

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

build_tsan() {
    local flags=(-std=c11 -Wall -Wextra -Werror -pedantic -O1 -g -fsanitize=thread -fno-omit-frame-pointer -pthread)
    # shellcheck disable=SC2086
    {
        cc "${flags[@]}" $cflags -o "$build/threads-tsan" tests/c/threads.c $libs -Wl,-rpath,"$libdir"
        cc "${flags[@]}" -DTHREADS_TSAN_SELFTEST $cflags -o "$build/threads-tsan-selftest" tests/c/threads.c \
            $libs -Wl,-rpath,"$libdir"
    }
}

# tsan.supp hides the uninstrumented library's reports (see there).
tsan_options="halt_on_error=1 exitcode=66 second_deadlock_stack=1 suppressions=$here/tsan.supp print_suppressions=1"

# Negative control: with tsan.supp in force, a race in the C code itself
# must still be reported.
run_tsan_selftest() {
    local rc=0
    TSAN_OPTIONS=$tsan_options "$build/threads-tsan-selftest" "$ca_dir" "$hosts" 20 \
        > "$tmp/tsan-selftest.log" 2>&1 || rc=$?
    if [[ $rc -eq 66 ]] && grep -q 'SUMMARY: ThreadSanitizer: data race.*threads\.c' "$tmp/tsan-selftest.log"; then
        grep 'SUMMARY: ThreadSanitizer' "$tmp/tsan-selftest.log"
        echo "TSan reported the deliberate race in threads.c (exit $rc) with tsan.supp in force: good"
    else
        cat "$tmp/tsan-selftest.log"
        echo "TSan did not report the deliberate race (exit $rc): the suppressions hide too much"
        return 1
    fi
}

run_tsan() {
    TSAN_OPTIONS=$tsan_options "$build/threads-tsan" "$ca_dir" "$hosts" 200
}

# tests/cxx: the C++ wrapper's tests under g++ and clang++ (plain), under
# ASan+UBSan and TSan (g++), its benchmark, and the compile-fail check.
build_cxx() {
    local warn=(-std=c++17 -Wall -Wextra -Werror -pedantic -g -pthread)
    local compiler
    for compiler in g++ clang++; do
        # shellcheck disable=SC2086
        "$compiler" "${warn[@]}" -O1 $cflags -o "$build/wrapper-$compiler" tests/cxx/wrapper.cpp $libs -Wl,-rpath,"$libdir"
        bash tests/cxx/compile_fail.sh "$compiler" "$(dirname "$header")"
    done
    # shellcheck disable=SC2086
    {
        g++ "${warn[@]}" -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer $cflags \
            -o "$build/wrapper-asan" tests/cxx/wrapper.cpp $libs -Wl,-rpath,"$libdir"
        g++ "${warn[@]}" -O1 -fsanitize=thread -fno-omit-frame-pointer $cflags \
            -o "$build/wrapper-tsan" tests/cxx/wrapper.cpp $libs -Wl,-rpath,"$libdir"
        g++ "${warn[@]}" -O2 $cflags -o "$build/bench" tests/cxx/bench.cpp $libs -Wl,-rpath,"$libdir"
    }
}

# ---------------------------------------------------------------------------
stage "build and install the library (make install-lib, TARGET_DIR=$lib_target)" install_library
stage "header matches the library's exports; coverage list" check_header
stage "build examples-c via pkg-config (temp copy)" build_examples
stage "build examples-c via the installed CMake package (shared and static)" build_examples_cmake
stage "build tests/c (boundary, threads, thread_exit, exact_answer, key_modes, log_events)" build_tests
stage "build the stand-in worker (testkit, TARGET_DIR=$standin_target)" build_standin
stage "start the stand-in worker" start_standin
stage "run quickstart" run_example quickstart
stage "run quickstart-static" run_example quickstart-static
stage "run raii" run_example raii
stage "run raii-static" run_example raii-static
stage "run the CMake-built quickstart, quickstart-static, raii, raii-static" run_cmake_examples
stage "run boundary" run_boundary "$build/boundary"
stage "run thread_exit (last-error calls from a thread-exit destructor)" "$build/thread_exit"
stage "run exact_answer (an odd key reaches C as written)" "$build/exact_answer" "$ca_dir" "$hosts"
stage "run key_modes (an unprotected key is DECNET_ERR_PKI with the fix)" "$build/key_modes" "$ca_dir"
stage "run log_events (the events one call raises; no key material; a re-entrant callback)" "$build/log_events" "$ca_dir" "$hosts"
stage "run threads ($threads_calls calls per thread)" "$build/threads" "$ca_dir" "$hosts" "$threads_calls"
stage "build tests/cxx (g++, clang++, ASan+UBSan, TSan, bench) and the compile-fail check" build_cxx
stage "run tests/cxx wrapper (g++)" "$build/wrapper-g++" "$ca_dir" "$hosts"
stage "run tests/cxx wrapper (clang++)" "$build/wrapper-clang++" "$ca_dir" "$hosts"
stage "ASan+UBSan: tests/cxx wrapper" "$build/wrapper-asan" "$ca_dir" "$hosts"
stage "TSan: tests/cxx wrapper" env TSAN_OPTIONS="$tsan_options" "$build/wrapper-tsan" "$ca_dir" "$hosts"
stage "C++ wrapper overhead per warm call (measured, not judged)" "$build/bench" "$ca_dir" "$hosts/ok.json"
stage "start the swarm (40 stand-ins, 16 faulty)" start_swarm
stage "run fleet (callback, outcomes, per-host arguments, early stop)" "$build/fleet" "$swarm_dir"
stage "valgrind memcheck: fleet" vg "$build/fleet" "$swarm_dir"
stage "valgrind memcheck: quickstart" vg "$build/examples-c/quickstart" "$ca_dir" "$hosts/ok.json"
stage "valgrind memcheck: raii" vg "$build/examples-c/raii" "$ca_dir" "$hosts/ok.json"
stage "valgrind memcheck: boundary" run_boundary vg "$build/boundary"
stage "valgrind memcheck: log_events" vg "$build/log_events" "$ca_dir" "$hosts"
stage "valgrind memcheck: threads (50 calls per thread)" vg "$build/threads" "$ca_dir" "$hosts" 50
stage "build with AddressSanitizer + UBSan (quickstart, boundary, threads)" build_asan
stage "ASan: quickstart" "$build/quickstart-asan" "$ca_dir" "$hosts/ok.json"
stage "ASan: boundary" run_boundary "$build/boundary-asan"
stage "ASan: threads (200 calls per thread)" "$build/threads-asan" "$ca_dir" "$hosts" 200
stage "build threads with ThreadSanitizer (and its racy self-test variant)" build_tsan
stage "TSan negative control: a deliberate C-side race is reported" run_tsan_selftest
stage "TSan: threads (200 calls per thread)" run_tsan

echo
echo "all stages passed in $(( $(date +%s) - started_at ))s"
echo "$passed passed, 0 failed"
