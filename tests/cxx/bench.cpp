// bench.cpp -- the C++ wrapper's overhead per warm call over the raw C call.
//
//   bench CA_DIR HOST_JSON_FILE [CALLS]
//
// Alternates batches of warm GET /health through decnet_client_health and
// through decnet::client::health on the same connection, and prints the
// median per-call time of each and their difference. Exits 1 when the
// wrapper costs more than 1 µs per call over the C call.
#include <decnet_agent_client.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

int main(int argc, char **argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: bench CA_DIR HOST_JSON_FILE [CALLS]\n");
        return 2;
    }
    int calls = argc > 3 ? std::atoi(argv[3]) : 2000;
    std::ifstream file(argv[2]);
    std::stringstream host;
    host << file.rdbuf();
    decnet::identity id = decnet::identity::ensure(argv[1]);
    decnet::client client(id, host.str());
    const decnet_client *raw = client.get();
    using clock = std::chrono::steady_clock;
    auto raw_call = [&] {
        char *out = nullptr;
        if (decnet_client_health(raw, &out) != DECNET_OK) std::abort();
        decnet_string_free(out);
    };
    auto cxx_call = [&] { (void)client.health(); };
    for (int i = 0; i < 200; ++i) {  // warm: connection, session, caches
        raw_call();
        cxx_call();
    }
    const int batch = 100;
    std::vector<double> raw_ns, cxx_ns;
    for (int done = 0; done < calls; done += batch) {
        auto t0 = clock::now();
        for (int i = 0; i < batch; ++i) raw_call();
        auto t1 = clock::now();
        for (int i = 0; i < batch; ++i) cxx_call();
        auto t2 = clock::now();
        raw_ns.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() / batch);
        cxx_ns.push_back(std::chrono::duration<double, std::nano>(t2 - t1).count() / batch);
    }
    auto median = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
    };
    double r = median(raw_ns), c = median(cxx_ns);
    std::printf("warm GET /health, %d calls each: C %.1f us, C++ %.1f us, wrapper overhead %.2f us per call\n",
                calls, r / 1000, c / 1000, (c - r) / 1000);
    return c - r <= 1000 ? 0 : 1;
}
