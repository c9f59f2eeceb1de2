// raii.cpp -- the C++ API (decnet_agent_client.hpp) against one worker.
//
//   raii CA_DIR HOST_JSON_FILE
//
// Handles are move-only objects freed by their destructors, returned JSON
// is a std::string the caller owns, and every failure is an exception of
// the decnet::error family carrying the C last-error detail. Exits 0 when
// the worker behaved as the contract says.
#include <decnet_agent_client.hpp>

#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

int main(int argc, char **argv) {
    if (argc != 3) {
        std::cerr << "usage: " << argv[0] << " CA_DIR HOST_JSON_FILE\n";
        return 2;
    }
    std::ifstream file(argv[2]);
    std::stringstream host_json;
    host_json << file.rdbuf();
    try {
        decnet::identity identity = decnet::identity::ensure(argv[1]);
        std::cout << "master " << identity.fingerprint() << "\n";
        decnet::client client(identity, host_json.str());
        std::cout << client.describe() << "\n";
        std::cout << "health  " << client.health() << "\n";
        std::cout << "status  " << client.status() << "\n";
        std::cout << "deploy  " << client.deploy(R"({"deckies":[{"name":"d1","services":["ssh"]}]})") << "\n";
        std::cout << "mutate  " << client.mutate("d1", {"ssh", "ftp"}) << "\n";
        std::cout << "apply   " << client.apply_topology(R"({"id":"cpp-topology","nodes":[]})") << "\n";
        std::cout << "state   " << client.topology_state() << "\n";
        try {
            client.apply_topology(R"({"id":"another-topology"})");
            std::cerr << "a second topology was accepted\n";
            return 1;
        } catch (const decnet::http_status &e) {
            if (e.status() != 409) {
                throw;
            }
            std::cout << "expected HTTP 409: " << e.body() << "\n";
        }
    } catch (const decnet::error &e) {
        std::cerr << "failed: " << e.kind() << ": " << e.what() << "\n";
        return 1;
    }
    std::cout << "raii: all calls behaved as expected\n";
    return 0;
}
