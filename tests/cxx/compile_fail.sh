#!/usr/bin/env bash
# tests/cxx/compile_fail.sh -- misuses of decnet_agent_client.hpp that must
# not compile.
#
#   bash tests/cxx/compile_fail.sh CXX INCLUDE_DIR
#
# Each snippet is compiled alone (-fsyntax-only, C++17, -Werror); the
# script fails if any of them compiles, or if the control snippet (the same
# scaffolding used correctly) does not.
set -euo pipefail
cxx=$1
include=$2
tmp=$(mktemp -d "${TMPDIR:-/tmp}/decnet-cxx-fail.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

prelude='#include <decnet_agent_client.hpp>
#include <utility>
void use(decnet::identity &id, decnet::client &c, decnet::updater &u, decnet::fleet &f, decnet::log_hook &h) {
    (void)id; (void)c; (void)u; (void)f; (void)h;'

compile() {
    printf '%s\n%s\n}\n' "$prelude" "$2" > "$tmp/$1.cpp"
    "$cxx" -std=c++17 -Wall -Wextra -Werror -pedantic -fsyntax-only -I"$include" "$tmp/$1.cpp" > "$tmp/$1.log" 2>&1
}

# Correct use of the same names: proves the scaffolding compiles.
if ! compile control 'decnet::client moved = std::move(c); decnet::identity other = std::move(id);
    f.call("health", std::nullopt, std::nullopt, [](std::string_view) { return true; }); (void)moved; (void)other;'; then
    cat "$tmp/control.log"; echo "control snippet does not compile"; exit 1
fi

failed=0
must_not_compile() {
    if compile "$1" "$2"; then
        echo "compiled, but must not: $1"; failed=1
    else
        echo "refused as it must: $1 ($(grep -m1 -o 'error: .*' "$tmp/$1.log" | cut -c1-90))"
    fi
}
must_not_compile copy-identity 'decnet::identity copy = id; (void)copy;'
must_not_compile copy-client 'decnet::client copy(c); (void)copy;'
must_not_compile copy-assign-client 'decnet::client other = std::move(c); other = c;'
must_not_compile copy-updater 'decnet::updater copy = u; (void)copy;'
must_not_compile copy-fleet 'decnet::fleet copy = f; (void)copy;'
must_not_compile copy-log-hook 'decnet::log_hook copy = h; (void)copy;'
must_not_compile default-empty-client 'decnet::client empty; (void)empty;'
must_not_compile default-empty-identity 'decnet::identity empty; (void)empty;'
must_not_compile adopt-raw-pointer 'decnet_client *raw = nullptr; decnet::client adopted(raw); (void)adopted;'
must_not_compile free-borrowed-handle 'decnet_client_free(c.get());'
must_not_compile callback-wrong-signature 'f.call("health", std::nullopt, std::nullopt, [](int) { return true; });'
must_not_compile error-field-assign 'decnet::error e(DECNET_ERR_IO, "x"); e.body() = "y";'
exit "$failed"
