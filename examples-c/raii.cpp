// raii.cpp -- C++17 RAII wrappers over the C ABI.
//
//   raii CA_DIR HOST_JSON_FILE
//
// Handles live in std::unique_ptr with the library's free functions as
// deleters, returned strings are adopted by an owning wrapper, and every
// failure becomes a decnet::Error carrying the result code and the
// last-error detail. Exits 0 when the worker behaved as the contract says.
#include <decnet_agent_client.h>

#include <cstdint>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace decnet {

// A failed call: its code and the detail recorded for this thread.
class Error : public std::runtime_error {
public:
    explicit Error(decnet_result code)
        : std::runtime_error(decnet_last_error_message()),
          code_(code),
          http_status_(decnet_last_error_http_status()),
          http_body_(decnet_last_error_http_body() ? decnet_last_error_http_body() : "") {}
    decnet_result code() const { return code_; }
    std::uint16_t http_status() const { return http_status_; }
    const std::string &http_body() const { return http_body_; }

private:
    decnet_result code_;
    std::uint16_t http_status_;
    std::string http_body_;
};

inline void check(decnet_result code) {
    if (code != DECNET_OK) {
        throw Error(code);
    }
}

// Takes ownership of a string returned through char** and copies it out.
inline std::string adopt(char *raw) {
    std::unique_ptr<char, decltype(&decnet_string_free)> owned(raw, &decnet_string_free);
    return owned ? std::string(owned.get()) : std::string();
}

class Identity {
public:
    explicit Identity(const std::string &ca_dir) {
        decnet_identity *raw = nullptr;
        check(decnet_identity_ensure(ca_dir.c_str(), &raw));
        handle_.reset(raw);
    }
    std::string fingerprint() const {
        char *raw = nullptr;
        check(decnet_identity_fingerprint(handle_.get(), &raw));
        return adopt(raw);
    }
    const decnet_identity *get() const { return handle_.get(); }

private:
    std::unique_ptr<decnet_identity, decltype(&decnet_identity_free)> handle_{nullptr, &decnet_identity_free};
};

class Client {
public:
    Client(const Identity &identity, const std::string &host_json) {
        decnet_client *raw = nullptr;
        check(decnet_client_new_from_host_json(identity.get(), host_json.c_str(), DECNET_HOSTNAME_ON, &raw));
        handle_.reset(raw);
    }
    std::string describe() const { return call([&](char **out) { return decnet_client_describe(get(), out); }); }
    std::string health() const { return call([&](char **out) { return decnet_client_health(get(), out); }); }
    std::string status() const { return call([&](char **out) { return decnet_client_status(get(), out); }); }
    std::string deploy(const std::string &config) const {
        return call([&](char **out) { return decnet_client_deploy(get(), config.c_str(), false, false, out); });
    }
    std::string mutate(const std::string &decky, const std::vector<std::string> &services) const {
        std::vector<const char *> names;
        for (const auto &s : services) {
            names.push_back(s.c_str());
        }
        return call([&](char **out) {
            return decnet_client_mutate(get(), decky.c_str(), names.data(), names.size(), false, out);
        });
    }
    std::string apply_topology(const std::string &hydrated) const {
        return call([&](char **out) { return decnet_client_apply_topology(get(), hydrated.c_str(), nullptr, out); });
    }
    std::string topology_state() const {
        return call([&](char **out) { return decnet_client_topology_state(get(), out); });
    }

private:
    const decnet_client *get() const { return handle_.get(); }
    template <typename F>
    static std::string call(F &&f) {
        char *raw = nullptr;
        check(f(&raw));
        return adopt(raw);
    }
    std::unique_ptr<decnet_client, decltype(&decnet_client_free)> handle_{nullptr, &decnet_client_free};
};

}  // namespace decnet

int main(int argc, char **argv) {
    if (argc != 3) {
        std::cerr << "usage: " << argv[0] << " CA_DIR HOST_JSON_FILE\n";
        return 2;
    }
    std::ifstream file(argv[2]);
    std::stringstream host_json;
    host_json << file.rdbuf();
    try {
        decnet::Identity identity(argv[1]);
        std::cout << "master " << identity.fingerprint() << "\n";
        decnet::Client client(identity, host_json.str());
        std::cout << client.describe() << "\n";
        std::cout << "health  " << client.health() << "\n";
        std::cout << "status  " << client.status() << "\n";
        std::cout << "deploy  "
                  << client.deploy(R"({"deckies":[{"name":"d1","services":["ssh"]}]})") << "\n";
        std::cout << "mutate  " << client.mutate("d1", {"ssh", "ftp"}) << "\n";
        std::cout << "apply   " << client.apply_topology(R"({"id":"cpp-topology","nodes":[]})") << "\n";
        std::cout << "state   " << client.topology_state() << "\n";
        try {
            client.apply_topology(R"({"id":"another-topology"})");
            std::cerr << "a second topology was accepted\n";
            return 1;
        } catch (const decnet::Error &e) {
            if (e.code() != DECNET_ERR_HTTP_STATUS || e.http_status() != 409) {
                throw;
            }
            std::cout << "expected HTTP 409: " << e.http_body() << "\n";
        }
    } catch (const decnet::Error &e) {
        std::cerr << "failed: " << decnet_result_name(static_cast<std::uint32_t>(e.code())) << ": " << e.what()
                  << "\n";
        return 1;
    }
    std::cout << "raii: all calls behaved as expected\n";
    return 0;
}
