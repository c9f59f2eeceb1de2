// wrapper.cpp -- tests of decnet_agent_client.hpp against the stand-in worker.
//
//   wrapper CA_DIR HOSTS_DIR
//
// Every RPC of client, updater and fleet; every exception type with its
// fields; a fleet callback that throws; a log hook lambda (and one that
// throws); moves and self-moves; 8 threads sharing one client. Prints one
// line per failed check and exits 1 if any failed.
#include <decnet_agent_client.hpp>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

int failures = 0;

void expect(bool ok, const std::string &what) {
    if (!ok) {
        std::cerr << "FAIL: " << what << "\n";
        ++failures;
    }
}

std::string read_file(const std::string &path) {
    std::ifstream file(path);
    std::stringstream text;
    text << file.rdbuf();
    return text.str();
}

bool contains(const std::string &text, const std::string &part) { return text.find(part) != std::string::npos; }

// Runs f, which must throw E; returns the caught exception's copy.
template <typename E, typename F>
std::optional<E> expect_throw(const std::string &what, F &&f) {
    try {
        f();
    } catch (const E &e) {
        return e;
    } catch (const std::exception &e) {
        expect(false, what + ": wrong exception: " + e.what());
        return std::nullopt;
    }
    expect(false, what + ": did not throw");
    return std::nullopt;
}

// A string field of a JSON object (enough for the flat records here).
std::string json_field(const std::string &json, const std::string &key) {
    std::string needle = "\"" + key + "\":";
    std::size_t at = json.find(needle);
    if (at == std::string::npos) return "";
    at += needle.size();
    if (json[at] == '"') {
        std::size_t end = json.find('"', at + 1);
        return json.substr(at + 1, end - at - 1);
    }
    std::size_t end = json.find_first_of(",}", at);
    return json.substr(at, end - at);
}

void test_client_rpcs(const decnet::client &client) {
    expect(contains(client.describe(), "127.0.0.1"), "describe names the address");
    client.connect();
    expect(contains(client.health(), "{"), "health is a JSON object");
    expect(contains(client.status(), "{"), "status is a JSON object");
    expect(contains(client.deploy(R"({"deckies":[{"name":"x1","services":["ssh"]}]})", true, false), "{"),
           "deploy (dry run)");
    // A real deployment, so the teardowns below have something to remove
    // (and leave the stand-in as they found it).
    expect(contains(client.deploy(R"({"deckies":[{"name":"x1","services":["ssh"]}]})", false, false), "{"),
           "deploy");
    expect(contains(client.mutate("x1", {"ssh", "ftp"}, true), "{"), "mutate");
    expect(contains(client.teardown("x1"), "{"), "teardown of one decky");
    expect(contains(client.teardown(), "{"), "teardown of all");
    expect(contains(client.topology_state(), "{"), "topology_state");
    // The stand-in keeps one topology: apply ours unless another is there.
    bool applied = false;
    try {
        expect(contains(client.apply_topology(R"({"id":"cxx-topology","nodes":[]})"), "{"), "apply_topology");
        applied = true;
    } catch (const decnet::http_status &e) {
        expect(e.status() == 409, "a first apply refused only for an earlier topology");
    }
    auto conflict = expect_throw<decnet::http_status>(
        "a second topology", [&] { client.apply_topology(R"({"id":"cxx-other","nodes":[]})"); });
    if (conflict) {
        expect(conflict->code() == DECNET_ERR_HTTP_STATUS, "http_status code");
        expect(conflict->kind() == "http_status", "http_status kind: " + conflict->kind());
        expect(conflict->status() == 409, "http_status status: " + std::to_string(conflict->status()));
        expect(!conflict->body().empty(), "http_status body");
        expect(!conflict->message().empty(), "http_status message");
        // The field speaks of lost connections and timeouts only.
        expect(!conflict->may_have_reached_worker(), "an answered call: may_have_reached_worker false");
        expect(!conflict->rolled_back().has_value(), "no rolled_back outside the updater");
    }
    if (applied) {
        expect(contains(client.teardown_topology("cxx-topology"), "{"), "teardown_topology");
    } else {
        expect_throw<decnet::http_status>("teardown_topology of an id not applied",
                                          [&] { client.teardown_topology("cxx-topology"); });
    }
    auto counts = client.get_handshake_counts();
    expect(counts.full >= 1, "at least one full handshake");
    decnet::timeouts t = client.get_timeouts(DECNET_PROFILE_CONTROL);
    t.read_ms += 1;
    client.set_timeouts(DECNET_PROFILE_CONTROL, t);
    expect(client.get_timeouts(DECNET_PROFILE_CONTROL).read_ms == t.read_ms, "set_timeouts took");
    client.set_max_response_bytes(1 << 20);
    client.set_session_resumption(true);
}

void test_self_destruct(const decnet::identity &id, const std::string &hosts) {
    // On its own client: the stand-in answers and keeps serving.
    decnet::client client(id, read_file(hosts + "/ok.json"));
    expect(contains(client.self_destruct(), "{"), "self_destruct");
}

void test_errors(const decnet::identity &id, const std::string &ca_dir, const std::string &hosts) {
    std::string ok = read_file(hosts + "/ok.json");
    std::string address = json_field(ok, "address");
    auto port = static_cast<std::uint16_t>(std::atoi(json_field(ok, "agent_port").c_str()));
    std::string pin = json_field(ok, "client_cert_fingerprint");
    expect(pin.size() == 64, "ok.json carries a pin");

    auto bad = expect_throw<decnet::invalid_argument>("malformed host JSON", [&] { decnet::client(id, "{nope"); });
    if (bad) expect(bad->code() == DECNET_ERR_INVALID_ARGUMENT && !bad->message().empty(), "invalid_argument fields");
    expect_throw<decnet::invalid_argument>("a NUL byte", [&] { decnet::client(id, std::string_view("{\0}", 3)); });

    std::string wrong(64, 'a');
    decnet::client mismatched(id, address, port, wrong);
    auto mismatch = expect_throw<decnet::pin_mismatch>("a wrong pin", [&] { mismatched.health(); });
    if (mismatch) {
        expect(mismatch->expected_fingerprint() == wrong, "expected fingerprint: " + mismatch->expected_fingerprint());
        expect(mismatch->actual_fingerprint() == pin, "actual fingerprint: " + mismatch->actual_fingerprint());
        expect(!mismatch->may_have_reached_worker(), "a pin mismatch never reached the worker");
        expect(mismatch->kind() == "pin_mismatch", "pin_mismatch kind: " + mismatch->kind());
    }
    // The copy outlives later failures on this thread.
    expect_throw<decnet::connect_error>("port 1 refuses", [&] { decnet::client(id, "127.0.0.1", 1, pin).health(); });
    if (mismatch) expect(mismatch->actual_fingerprint() == pin, "fields copied at the throw");

    decnet::client stalled(id, read_file(hosts + "/stall.json"));
    decnet::timeouts quick = stalled.get_timeouts(DECNET_PROFILE_CONTROL);
    quick.read_ms = 300;
    stalled.set_timeouts(DECNET_PROFILE_CONTROL, quick);
    auto late = expect_throw<decnet::timeout>("a stalled worker", [&] { stalled.health(); });
    if (late) {
        expect(late->code() == DECNET_ERR_TIMEOUT && late->may_have_reached_worker(), "timeout fields");
        expect(late->phase() == decnet::timeout_phase::read, "a stalled answer is a read timeout");
    }
    expect_throw<decnet::protocol_error>("a non-JSON body",
                                         [&] { decnet::client(id, read_file(hosts + "/nonjson.json")).health(); });
    expect_throw<decnet::connection_lost>("a closed connection",
                                          [&] { decnet::client(id, read_file(hosts + "/close.json")).status(); });
    auto missing = expect_throw<decnet::not_enrolled>("an empty identity dir",
                                                      [&] { decnet::identity::load_dir(hosts); });
    if (missing) expect(contains(missing->message(), "hosts"), "not_enrolled names the file: " + missing->message());
    expect_throw<decnet::io_error>("a missing certificate file",
                                   [&] { decnet::fingerprint_file(ca_dir + "/no-such.crt"); });
    expect_throw<decnet::pki_error>("a file that is no certificate",
                                    [&] { decnet::fingerprint_file(hosts + "/ok.json"); });
    decnet::client moved(id, ok);
    decnet::client into(std::move(moved));
    auto null = expect_throw<decnet::null_argument>("a moved-from client", [&] { moved.health(); });
    if (null) expect(null->code() == DECNET_ERR_NULL_ARGUMENT, "null_argument code");
    // Codes no stand-in can provoke: the mapping from code to class.
    expect_throw<decnet::tls_error>("TLS code", [] { decnet::detail::throw_result(DECNET_ERR_TLS); });
    expect_throw<decnet::internal_error>("internal code", [] { decnet::detail::throw_result(DECNET_ERR_INTERNAL); });
    expect_throw<decnet::panic>("panic code", [] { decnet::detail::throw_result(DECNET_ERR_PANIC); });
    auto base = expect_throw<decnet::error>("base class", [] { decnet::detail::throw_result(DECNET_ERR_PKI); });
    if (base) expect(base->code() == DECNET_ERR_PKI, "pki through the base class");
}

void test_updater(const decnet::identity &id, const std::string &hosts) {
    std::string dir = hosts + "/../updaters";
    std::string ok = read_file(dir + "/ok.json");
    auto port = static_cast<std::uint16_t>(std::atoi(json_field(ok, "updater_port").c_str()));
    decnet::updater updater(id, ok, port);
    expect(contains(updater.health(), "{"), "updater health");
    expect(contains(updater.releases(), "{"), "updater releases");
    expect(contains(updater.update_bytes("tarball-1", "cxx1"), "{"), "updater update");
    expect(contains(updater.update_bytes("tarball-2", "cxx2"), "{"), "updater second update");
    expect(contains(updater.rollback(), "{"), "updater rollback");
    std::optional<std::string> answered = updater.update_self_bytes("tarball-3", "cxx3");
    expect(answered.has_value(), "update_self answered by the ok updater");
    expect(contains(updater.wait_for_release("cxx3", 5000, 50), "cxx3"), "wait_for_release");
    expect(updater.get_timeouts(DECNET_UPDATER_PROFILE_UPDATE).read_ms > 0, "updater timeouts");
    updater.set_timeouts(DECNET_UPDATER_PROFILE_CONTROL, updater.get_timeouts(DECNET_UPDATER_PROFILE_CONTROL));

    std::string probe = read_file(dir + "/probe.json");
    decnet::updater failing(id, probe, static_cast<std::uint16_t>(std::atoi(json_field(probe, "updater_port").c_str())));
    auto refused = expect_throw<decnet::http_status>("an update failing its probe",
                                                     [&] { failing.update_bytes("tarball-bad", "bad"); });
    if (refused) {
        expect(refused->status() == 409, "probe failure is a 409");
        expect(refused->rolled_back() == std::optional<bool>(true), "rolled_back carried");
        expect(!refused->update_error().empty(), "update_error carried");
        (void)refused->update_stderr();
    }
    std::string drop = read_file(dir + "/selfdrop.json");
    decnet::updater dropping(id, drop, static_cast<std::uint16_t>(std::atoi(json_field(drop, "updater_port").c_str())));
    expect(!dropping.update_self_bytes("tarball-4", "cxx4").has_value(), "a dropped connection is none");
    expect_throw<decnet::timeout>("a release that never comes", [&] { dropping.wait_for_release("never", 300, 50); });
}

void test_fleet(const decnet::identity &id, const std::string &hosts) {
    std::string ok = read_file(hosts + "/ok.json");
    decnet::fleet fleet(id, "[" + ok + "]");
    expect(fleet.size() == 1, "fleet size");
    fleet.set_concurrency(4);
    fleet.set_deadline_ms(0);
    fleet.set_sweep_niceness(5);
    fleet.set_session_resumption(true);
    fleet.set_timeouts(DECNET_PROFILE_CONTROL, decnet::timeouts{5000, 5000, 5000, 5000});
    expect(contains(fleet.call("health"), "\"outcome\":\"ok\""), "fleet health");
    int seen = 0;
    std::string results = fleet.call("status", std::nullopt, decnet::sweep_options{2, 0},
                                     [&](std::string_view host) { seen += contains(std::string(host), "ok") ? 1 : 0; });
    expect(seen == 1 && contains(results, "\"outcome\":\"ok\""), "a void callback sees the host");
    fleet.call("health", std::string_view("[0]"), std::nullopt, [](std::string_view) { return false; });
    expect(fleet.get_handshake_counts().full >= 1, "fleet handshakes");
    fleet.set_max_open_connections(1);
    expect(fleet.get_connection_budget().max_open_connections == 1, "the connection cap is read back");
    expect(contains(fleet.call("health"), "\"outcome\":\"ok\""), "a health call within a cap of 1");
    expect(fleet.get_connection_budget().open_connections <= 1, "at most one connection open");
    expect_throw<decnet::invalid_argument>("a cap of 0", [&] { fleet.set_max_open_connections(0); });
    struct boom {
        int n;
    };
    bool caught = false;
    try {
        fleet.call("health", std::nullopt, std::nullopt, [](std::string_view) { throw boom{7}; });
    } catch (const boom &b) {
        caught = b.n == 7;
    }
    expect(caught, "a throwing callback rethrows its own exception after the sweep");
    expect_throw<decnet::invalid_argument>("an unknown RPC", [&] { fleet.call("no-such-rpc"); });
}

void test_log_hook(const decnet::client &client) {
    std::vector<std::string> events;
    {
        decnet::log_hook hook(DECNET_LOG_INFO, [&](decnet_log_level level, std::string_view json) {
            if (level <= DECNET_LOG_INFO) events.emplace_back(json);
        });
        client.health();
    }
    bool answered = false;
    for (const std::string &e : events) answered = answered || contains(e, "request.answered");
    expect(answered, "the log hook lambda saw request.answered");
    std::size_t after = events.size();
    client.health();
    expect(events.size() == after, "a destroyed hook receives nothing");
    {
        decnet::log_hook thrower(DECNET_LOG_INFO, [](decnet_log_level, std::string_view) {
            throw std::runtime_error("from the hook");
        });
        bool rethrown = false;
        try {
            client.health();
        } catch (const std::runtime_error &e) {
            rethrown = std::string(e.what()) == "from the hook";
        }
        expect(rethrown, "a throwing log hook rethrows after the call");
    }
    client.health();  // nothing pending any more
}

void test_moves(const decnet::identity &id, const std::string &hosts) {
    std::string ok = read_file(hosts + "/ok.json");
    decnet::identity a = decnet::identity::ensure(hosts + "/../ca");
    decnet::identity b = std::move(a);
    expect(!a.valid() && b.valid(), "identity move");
    decnet::identity &self = b;
    b = std::move(self);
    expect(b.valid() && b.fingerprint() == id.fingerprint(), "identity self-move keeps it");
    decnet::client c1(id, ok);
    decnet::client c2(id, ok);
    c2 = std::move(c1);
    expect(!c1.valid() && c2.valid(), "client move assignment");
    decnet::client &c2_self = c2;
    c2 = std::move(c2_self);
    expect(c2.valid() && contains(c2.health(), "{"), "client self-move keeps it");
    decnet::fleet f1(id, "[" + ok + "]");
    decnet::fleet f2 = std::move(f1);
    decnet::fleet &f2_self = f2;
    f2 = std::move(f2_self);
    expect(!f1.valid() && f2.size() == 1, "fleet move and self-move");
    std::string up = read_file(hosts + "/../updaters/ok.json");
    decnet::updater u1(id, up, static_cast<std::uint16_t>(std::atoi(json_field(up, "updater_port").c_str())));
    decnet::updater u2 = std::move(u1);
    decnet::updater &u2_self = u2;
    u2 = std::move(u2_self);
    expect(!u1.valid() && contains(u2.health(), "{"), "updater move and self-move");
}

void test_threads(const decnet::client &client) {
    std::atomic<int> ok{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&] {
            for (int i = 0; i < 25; ++i) {
                try {
                    if (contains(client.health(), "{")) ++ok;
                } catch (const decnet::error &e) {
                    std::cerr << "thread call failed: " << e.kind() << ": " << e.what() << "\n";
                }
            }
        });
    }
    for (std::thread &t : threads) t.join();
    expect(ok == 8 * 25, "8 threads sharing one client: " + std::to_string(ok.load()) + " of 200");
}

}  // namespace

int main(int argc, char **argv) {
    if (argc != 3) {
        std::cerr << "usage: wrapper CA_DIR HOSTS_DIR\n";
        return 2;
    }
    std::string ca_dir = argv[1], hosts = argv[2];
    try {
        expect(decnet::version() == decnet_version(), "version");
        decnet::identity id = decnet::identity::ensure(ca_dir);
        decnet::client client(id, read_file(hosts + "/ok.json"));
        test_client_rpcs(client);
        test_errors(id, ca_dir, hosts);
        test_updater(id, hosts);
        test_fleet(id, hosts);
        test_log_hook(client);
        test_moves(id, hosts);
        test_threads(client);
        test_self_destruct(id, hosts);
    } catch (const decnet::error &e) {
        std::cerr << "FAIL: unexpected " << e.kind() << ": " << e.what() << "\n";
        return 1;
    }
    if (failures) {
        std::cerr << failures << " check(s) failed\n";
        return 1;
    }
    std::cout << "wrapper: all checks passed\n";
    return 0;
}
