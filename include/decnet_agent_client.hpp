// decnet_agent_client.hpp -- header-only C++17 API over decnet_agent_client.h.
//
// Depends only on the C header and the standard library; link the C
// library as for C (pkg-config decnet_agent_client_cxx, or the CMake target
// decnet_agent_client::cxx).
//
// Rules for every type below:
// - Handles (identity, client, updater, fleet) are move-only. A moved-from
//   handle is empty: calling anything but destruction, assignment or
//   `valid()` on it throws decnet::null_argument (the C library refuses the
//   NULL handle); it never crashes.
// - Ownership: each handle owns its C handle and frees it in its
//   destructor. Every string returned is a std::string the caller owns;
//   nothing returned borrows from the library.
// - Thread safety: the const member functions of one handle may be called
//   from any number of threads at once (the C calls are thread-safe).
//   Construction, destruction, move and assignment of one handle must not
//   race with any other use of that same handle.
// - Errors: every failed call throws a subclass of decnet::error matching
//   the C result code, carrying copies of every last-error field taken at
//   the throw (nothing dangles, later calls do not change it).
// - Text in: std::string_view, copied to a NUL-terminated buffer; a view
//   holding a NUL byte is decnet::invalid_argument before any C call.
// - JSON stays text: parse the returned std::string with any JSON library.
#ifndef DECNET_AGENT_CLIENT_HPP
#define DECNET_AGENT_CLIENT_HPP

#include <decnet_agent_client.h>

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace decnet {

/// Which step of a call ran out of time (decnet_timeout_phase).
enum class timeout_phase {
    /// Not a timeout (never the phase of a thrown decnet::timeout).
    none = DECNET_TIMEOUT_PHASE_NONE,
    /// Resolving the name and opening the TCP connection.
    connect = DECNET_TIMEOUT_PHASE_CONNECT,
    /// The TLS handshake.
    handshake = DECNET_TIMEOUT_PHASE_HANDSHAKE,
    /// Sending the request.
    write = DECNET_TIMEOUT_PHASE_WRITE,
    /// Waiting for and reading the answer.
    read = DECNET_TIMEOUT_PHASE_READ,
    /// Waiting for a connection from the pool.
    pool = DECNET_TIMEOUT_PHASE_POOL,
    /// An overall deadline (a fleet sweep's, a release wait's) passed.
    deadline = DECNET_TIMEOUT_PHASE_DEADLINE,
};

/// Base of every exception thrown by this wrapper: the C result code and
/// every field of the C last-error getters, copied when thrown.
class error : public std::runtime_error {
public:
    /// Copies the calling thread's last-error detail for result `code`.
    explicit error(decnet_result code)
        : std::runtime_error(copy(decnet_last_error_message())),
          code_(code),
          http_status_(decnet_last_error_http_status()),
          http_body_(copy(decnet_last_error_http_body())),
          expected_fingerprint_(copy(decnet_last_error_expected_fingerprint())),
          actual_fingerprint_(copy(decnet_last_error_actual_fingerprint())),
          may_have_reached_worker_(decnet_last_error_may_have_reached_worker()),
          update_error_(copy(decnet_last_error_update_error())),
          update_stderr_(copy(decnet_last_error_update_stderr())),
          rolled_back_(decnet_last_error_rolled_back()) {}

    /// An error raised by the wrapper itself (no C call failed): only the
    /// code and message are set.
    error(decnet_result code, const std::string &message)
        : std::runtime_error(message), code_(code), http_status_(0), may_have_reached_worker_(false),
          rolled_back_(-1) {}

    /// The C result code.
    decnet_result code() const noexcept { return code_; }
    /// The code's stable name, e.g. "DECNET_ERR_TIMEOUT".
    std::string kind() const { return copy(decnet_result_name(static_cast<std::uint32_t>(code_))); }
    /// The message (also what()).
    std::string message() const { return what(); }
    /// HTTP status of an HTTP-status failure, else 0.
    std::uint16_t status() const noexcept { return http_status_; }
    /// Response body of an HTTP-status failure, else empty.
    const std::string &body() const noexcept { return http_body_; }
    /// The pinned fingerprint of a pin mismatch, else empty.
    const std::string &expected_fingerprint() const noexcept { return expected_fingerprint_; }
    /// The fingerprint the peer presented in a pin mismatch, else empty.
    const std::string &actual_fingerprint() const noexcept { return actual_fingerprint_; }
    /// Whether the request may have reached the worker (retry caution).
    bool may_have_reached_worker() const noexcept { return may_have_reached_worker_; }
    /// `detail.error` of an updater failure, else empty.
    const std::string &update_error() const noexcept { return update_error_; }
    /// `detail.stderr` of an updater failure, else empty.
    const std::string &update_stderr() const noexcept { return update_stderr_; }
    /// `detail.rolled_back` of an updater failure; none when absent.
    std::optional<bool> rolled_back() const noexcept {
        return rolled_back_ < 0 ? std::nullopt : std::optional<bool>(rolled_back_ == 1);
    }

private:
    static std::string copy(const char *text) { return text ? std::string(text) : std::string(); }

    decnet_result code_;
    std::uint16_t http_status_;
    std::string http_body_;
    std::string expected_fingerprint_;
    std::string actual_fingerprint_;
    bool may_have_reached_worker_;
    std::string update_error_;
    std::string update_stderr_;
    std::int32_t rolled_back_;
};

// One class per failing result code, in the C enum's order.
#define DECNET_CXX_ERROR(name)                     \
    /** See the matching DECNET_ERR_* code. */   \
    class name : public error {                    \
    public:                                        \
        using error::error;                        \
    };
DECNET_CXX_ERROR(invalid_argument)
DECNET_CXX_ERROR(io_error)
DECNET_CXX_ERROR(pki_error)
DECNET_CXX_ERROR(not_enrolled)
DECNET_CXX_ERROR(connect_error)
DECNET_CXX_ERROR(tls_error)
DECNET_CXX_ERROR(pin_mismatch)
DECNET_CXX_ERROR(http_status)
DECNET_CXX_ERROR(protocol_error)
DECNET_CXX_ERROR(connection_lost)
DECNET_CXX_ERROR(internal_error)
DECNET_CXX_ERROR(null_argument)
DECNET_CXX_ERROR(panic)
#undef DECNET_CXX_ERROR

/// DECNET_ERR_TIMEOUT; carries the phase that ran out.
class timeout : public error {
public:
    /// Copies the last-error detail, as error does, and the phase.
    explicit timeout(decnet_result code)
        : error(code), phase_(static_cast<timeout_phase>(decnet_last_error_timeout_phase())) {}
    /// Which timeout ran out.
    timeout_phase phase() const noexcept { return phase_; }

private:
    timeout_phase phase_;
};

namespace detail {

// An exception a log hook threw on this thread, rethrown by the wrapper
// call during which it was raised, once that C call has returned.
inline thread_local std::exception_ptr pending_log_exception;

[[noreturn]] inline void throw_result(decnet_result code) {
    switch (code) {
    case DECNET_ERR_INVALID_ARGUMENT: throw invalid_argument(code);
    case DECNET_ERR_IO: throw io_error(code);
    case DECNET_ERR_PKI: throw pki_error(code);
    case DECNET_ERR_NOT_ENROLLED: throw not_enrolled(code);
    case DECNET_ERR_CONNECT: throw connect_error(code);
    case DECNET_ERR_TLS: throw tls_error(code);
    case DECNET_ERR_PIN_MISMATCH: throw pin_mismatch(code);
    case DECNET_ERR_TIMEOUT: throw timeout(code);
    case DECNET_ERR_HTTP_STATUS: throw http_status(code);
    case DECNET_ERR_PROTOCOL: throw protocol_error(code);
    case DECNET_ERR_CONNECTION_LOST: throw connection_lost(code);
    case DECNET_ERR_INTERNAL: throw internal_error(code);
    case DECNET_ERR_NULL_ARGUMENT: throw null_argument(code);
    case DECNET_ERR_PANIC: throw panic(code);
    case DECNET_OK: break;
    }
    throw error(code);
}

// Rethrows a pending log-hook exception, then throws for a failed code.
inline void check(decnet_result code) {
    if (pending_log_exception) {
        std::exception_ptr pending = std::exchange(pending_log_exception, nullptr);
        std::rethrow_exception(pending);
    }
    if (code != DECNET_OK) {
        throw_result(code);
    }
}

// A NUL-terminated copy of `text`; refuses an embedded NUL.
inline std::string c_text(std::string_view text, const char *what) {
    if (text.find('\0') != std::string_view::npos) {
        throw invalid_argument(DECNET_ERR_INVALID_ARGUMENT, std::string(what) + " contains a NUL byte");
    }
    return std::string(text);
}

// Adopts a string returned through char** (NULL gives none).
inline std::optional<std::string> adopt_optional(char *raw) {
    std::unique_ptr<char, void (*)(char *)> owned(raw, &decnet_string_free);
    return owned ? std::optional<std::string>(std::string(owned.get())) : std::nullopt;
}

// Runs one char**-returning C call and adopts its text.
template <typename F>
std::string text_call(F &&f) {
    char *raw = nullptr;
    decnet_result code = f(&raw);
    std::optional<std::string> text = adopt_optional(raw);
    check(code);
    return text ? std::move(*text) : std::string();
}

// NUL-terminated copies of a list of names and their pointer array.
class c_list {
public:
    c_list(const std::vector<std::string_view> &items, const char *what) {
        texts_.reserve(items.size());
        for (std::string_view item : items) {
            texts_.push_back(c_text(item, what));
        }
        for (const std::string &text : texts_) {
            pointers_.push_back(text.c_str());
        }
    }
    const char *const *data() const noexcept { return pointers_.empty() ? nullptr : pointers_.data(); }
    std::size_t size() const noexcept { return pointers_.size(); }

private:
    std::vector<std::string> texts_;
    std::vector<const char *> pointers_;
};

// A move-only owner of one C handle freed by Free.
template <typename T, void (*Free)(T *)>
class handle {
public:
    handle() noexcept = default;
    explicit handle(T *raw) noexcept : raw_(raw) {}
    handle(const handle &) = delete;
    handle &operator=(const handle &) = delete;
    handle(handle &&other) noexcept : raw_(std::exchange(other.raw_, nullptr)) {}
    handle &operator=(handle &&other) noexcept {
        if (this != &other) {
            reset(std::exchange(other.raw_, nullptr));
        }
        return *this;
    }
    ~handle() { reset(nullptr); }
    T *get() const noexcept { return raw_; }

private:
    void reset(T *raw) noexcept {
        T *old = std::exchange(raw_, raw);
        if (old) {
            Free(old);
        }
    }
    T *raw_ = nullptr;
};

inline const char *c_or_null(const std::optional<std::string> &text) { return text ? text->c_str() : nullptr; }

inline std::optional<std::string> c_optional(std::optional<std::string_view> text, const char *what) {
    return text ? std::optional<std::string>(c_text(*text, what)) : std::nullopt;
}

}  // namespace detail

/// How the worker's name is checked besides the pin.
enum class hostname_verification : std::uint32_t {
    off = DECNET_HOSTNAME_OFF,
    on = DECNET_HOSTNAME_ON,
    from_env = DECNET_HOSTNAME_FROM_ENV,
};

/// The library's version, e.g. "0.1.0".
inline std::string version() { return decnet_version(); }

/// A master identity (CA certificate, master certificate and key).
/// Move-only; const members thread-safe; clients made from it keep working
/// after it is destroyed.
class identity {
public:
    /// Ensures the CA and master bundle under `ca_dir` (none: the default).
    static identity ensure(std::optional<std::string_view> ca_dir = std::nullopt) {
        std::optional<std::string> dir = detail::c_optional(ca_dir, "ca_dir");
        decnet_identity *raw = nullptr;
        detail::check(decnet_identity_ensure(detail::c_or_null(dir), &raw));
        return identity(raw);
    }
    /// Loads the three PEM files.
    static identity load(std::string_view ca_cert, std::string_view cert, std::string_view key) {
        std::string a = detail::c_text(ca_cert, "ca_cert_path"), b = detail::c_text(cert, "cert_path"),
                    c = detail::c_text(key, "key_path");
        decnet_identity *raw = nullptr;
        detail::check(decnet_identity_load(a.c_str(), b.c_str(), c.c_str(), &raw));
        return identity(raw);
    }
    /// Loads the master bundle from `dir` without creating anything.
    static identity load_dir(std::string_view dir) {
        std::string d = detail::c_text(dir, "dir");
        decnet_identity *raw = nullptr;
        detail::check(decnet_identity_load_dir(d.c_str(), &raw));
        return identity(raw);
    }
    /// The certificate's fingerprint (64 lowercase hex characters).
    std::string fingerprint() const {
        return detail::text_call([&](char **out) { return decnet_identity_fingerprint(get(), out); });
    }
    /// False once moved from.
    bool valid() const noexcept { return get() != nullptr; }
    /// The C handle, still owned by this object.
    const decnet_identity *get() const noexcept { return handle_.get(); }

private:
    explicit identity(decnet_identity *raw) noexcept : handle_(raw) {}
    detail::handle<decnet_identity, &decnet_identity_free> handle_;
};

/// Timeouts of one profile, in milliseconds (see decnet_timeouts).
using timeouts = decnet_timeouts;
/// Completed TLS handshakes by kind.
using handshake_counts = decnet_handshake_counts;

/// A pinned mTLS client of one worker agent. Move-only; const members
/// thread-safe (share one client between threads by reference).
class client {
public:
    /// From a host-record JSON object.
    client(const identity &id, std::string_view host_json, hostname_verification check = hostname_verification::on) {
        std::string json = detail::c_text(host_json, "host_json");
        decnet_client *raw = nullptr;
        detail::check(
            decnet_client_new_from_host_json(id.get(), json.c_str(), static_cast<std::uint32_t>(check), &raw));
        handle_ = decltype(handle_)(raw);
    }
    /// From an address, port (0: 8765) and optional pin.
    client(const identity &id, std::string_view address, std::uint16_t port, std::optional<std::string_view> pin,
           hostname_verification check = hostname_verification::on) {
        std::string addr = detail::c_text(address, "address");
        std::optional<std::string> p = detail::c_optional(pin, "pin");
        decnet_client *raw = nullptr;
        detail::check(decnet_client_new(id.get(), addr.c_str(), port, detail::c_or_null(p),
                                        static_cast<std::uint32_t>(check), &raw));
        handle_ = decltype(handle_)(raw);
    }
    /// Connects and handshakes now.
    void connect() const { detail::check(decnet_client_connect(get())); }
    /// A one-line description of the client.
    std::string describe() const { return call(&decnet_client_describe); }
    /// Timeouts of `profile`.
    timeouts get_timeouts(decnet_profile profile) const {
        timeouts out{};
        detail::check(decnet_client_get_timeouts(get(), static_cast<std::uint32_t>(profile), &out));
        return out;
    }
    /// Replaces the timeouts of `profile`.
    void set_timeouts(decnet_profile profile, const timeouts &value) const {
        detail::check(decnet_client_set_timeouts(get(), static_cast<std::uint32_t>(profile), &value));
    }
    /// Caps response bodies.
    void set_max_response_bytes(std::uint64_t max_bytes) const {
        detail::check(decnet_client_set_max_response_bytes(get(), max_bytes));
    }
    /// Turns TLS session resumption on or off.
    void set_session_resumption(bool on) const { detail::check(decnet_client_set_session_resumption(get(), on)); }
    /// Handshakes completed so far.
    handshake_counts get_handshake_counts() const {
        handshake_counts out{};
        detail::check(decnet_client_handshake_counts(get(), &out));
        return out;
    }
    /// GET /health.
    std::string health() const { return call(&decnet_client_health); }
    /// GET /status.
    std::string status() const { return call(&decnet_client_status); }
    /// POST /deploy.
    std::string deploy(std::string_view config_json, bool dry_run = false, bool no_cache = false) const {
        std::string config = detail::c_text(config_json, "config_json");
        return detail::text_call(
            [&](char **out) { return decnet_client_deploy(get(), config.c_str(), dry_run, no_cache, out); });
    }
    /// POST /mutate.
    std::string mutate(std::string_view decky_id, const std::vector<std::string_view> &services,
                       bool dry_run = false) const {
        std::string decky = detail::c_text(decky_id, "decky_id");
        detail::c_list names(services, "services");
        return detail::text_call([&](char **out) {
            return decnet_client_mutate(get(), decky.c_str(), names.data(), names.size(), dry_run, out);
        });
    }
    /// POST /teardown of one decky, or of all (none).
    std::string teardown(std::optional<std::string_view> decky_id = std::nullopt) const {
        std::optional<std::string> decky = detail::c_optional(decky_id, "decky_id");
        return detail::text_call(
            [&](char **out) { return decnet_client_teardown(get(), detail::c_or_null(decky), out); });
    }
    /// POST /self-destruct.
    std::string self_destruct() const { return call(&decnet_client_self_destruct); }
    /// POST /topology/apply (version hash none: computed).
    std::string apply_topology(std::string_view hydrated_json,
                               std::optional<std::string_view> version_hash = std::nullopt) const {
        std::string hydrated = detail::c_text(hydrated_json, "hydrated_json");
        std::optional<std::string> hash = detail::c_optional(version_hash, "version_hash");
        return detail::text_call([&](char **out) {
            return decnet_client_apply_topology(get(), hydrated.c_str(), detail::c_or_null(hash), out);
        });
    }
    /// POST /topology/teardown.
    std::string teardown_topology(std::string_view topology_id) const {
        std::string id = detail::c_text(topology_id, "topology_id");
        return detail::text_call([&](char **out) { return decnet_client_teardown_topology(get(), id.c_str(), out); });
    }
    /// GET /topology/state.
    std::string topology_state() const { return call(&decnet_client_topology_state); }
    /// False once moved from.
    bool valid() const noexcept { return get() != nullptr; }
    /// The C handle, still owned by this object.
    const decnet_client *get() const noexcept { return handle_.get(); }

private:
    std::string call(decnet_result (*f)(const decnet_client *, char **)) const {
        return detail::text_call([&](char **out) { return f(get(), out); });
    }
    detail::handle<decnet_client, &decnet_client_free> handle_;
};

/// A pinned mTLS client of one worker's updater. Move-only; const members
/// thread-safe.
class updater {
public:
    /// From a host record carrying `updater_cert_fingerprint`; port 0: 8766.
    updater(const identity &id, std::string_view host_json, std::uint16_t port = 0,
            hostname_verification check = hostname_verification::on) {
        std::string json = detail::c_text(host_json, "host_json");
        decnet_updater *raw = nullptr;
        detail::check(decnet_updater_new_from_host_json(id.get(), json.c_str(), port,
                                                        static_cast<std::uint32_t>(check), &raw));
        handle_ = decltype(handle_)(raw);
    }
    /// From an address, port (0: 8766) and the updater's pin (required).
    updater(const identity &id, std::string_view address, std::uint16_t port, std::string_view pin,
            hostname_verification check = hostname_verification::on) {
        std::string addr = detail::c_text(address, "address"), p = detail::c_text(pin, "pin");
        decnet_updater *raw = nullptr;
        detail::check(
            decnet_updater_new(id.get(), addr.c_str(), port, p.c_str(), static_cast<std::uint32_t>(check), &raw));
        handle_ = decltype(handle_)(raw);
    }
    /// Timeouts of `profile`.
    timeouts get_timeouts(decnet_updater_profile profile) const {
        timeouts out{};
        detail::check(decnet_updater_get_timeouts(get(), static_cast<std::uint32_t>(profile), &out));
        return out;
    }
    /// Replaces the timeouts of `profile`.
    void set_timeouts(decnet_updater_profile profile, const timeouts &value) const {
        detail::check(decnet_updater_set_timeouts(get(), static_cast<std::uint32_t>(profile), &value));
    }
    /// GET /health.
    std::string health() const { return call(&decnet_updater_health); }
    /// GET /releases.
    std::string releases() const { return call(&decnet_updater_releases); }
    /// POST /rollback.
    std::string rollback() const { return call(&decnet_updater_rollback); }
    /// POST /update of the tarball file at `tarball_path`.
    std::string update_file(std::string_view tarball_path, std::string_view sha) const {
        std::string path = detail::c_text(tarball_path, "tarball_path"), s = detail::c_text(sha, "sha");
        return detail::text_call(
            [&](char **out) { return decnet_updater_update(get(), path.c_str(), nullptr, 0, s.c_str(), out); });
    }
    /// POST /update of the tarball bytes `tarball`.
    std::string update_bytes(std::string_view tarball, std::string_view sha) const {
        std::string s = detail::c_text(sha, "sha");
        return detail::text_call([&](char **out) {
            return decnet_updater_update(get(), nullptr, reinterpret_cast<const std::uint8_t *>(tarball.data()),
                                         tarball.size(), s.c_str(), out);
        });
    }
    /// POST /update-self of the tarball file; none when the updater closed
    /// the connection to re-execute (confirm with wait_for_release).
    std::optional<std::string> update_self_file(std::string_view tarball_path, std::string_view sha) const {
        std::string path = detail::c_text(tarball_path, "tarball_path"), s = detail::c_text(sha, "sha");
        return self_update(path.c_str(), nullptr, 0, s);
    }
    /// POST /update-self of the tarball bytes; as update_self_file.
    std::optional<std::string> update_self_bytes(std::string_view tarball, std::string_view sha) const {
        std::string s = detail::c_text(sha, "sha");
        return self_update(nullptr, reinterpret_cast<const std::uint8_t *>(tarball.data()), tarball.size(), s);
    }
    /// Polls /health until release `sha` is active.
    std::string wait_for_release(std::string_view sha, std::uint64_t deadline_ms, std::uint64_t interval_ms) const {
        std::string s = detail::c_text(sha, "sha");
        return detail::text_call([&](char **out) {
            return decnet_updater_wait_for_release(get(), s.c_str(), deadline_ms, interval_ms, out);
        });
    }
    /// False once moved from.
    bool valid() const noexcept { return get() != nullptr; }
    /// The C handle, still owned by this object.
    const decnet_updater *get() const noexcept { return handle_.get(); }

private:
    std::string call(decnet_result (*f)(const decnet_updater *, char **)) const {
        return detail::text_call([&](char **out) { return f(get(), out); });
    }
    std::optional<std::string> self_update(const char *path, const std::uint8_t *data, std::size_t len,
                                           const std::string &sha) const {
        bool closed = false;
        char *raw = nullptr;
        decnet_result code = decnet_updater_update_self(get(), path, data, len, sha.c_str(), &closed, &raw);
        std::optional<std::string> text = detail::adopt_optional(raw);
        detail::check(code);
        return closed ? std::nullopt : text;
    }
    detail::handle<decnet_updater, &decnet_updater_free> handle_;
};

/// Per-call sweep options (0: the fleet's setting).
using sweep_options = decnet_sweep_options;

/// Many pinned clients driven in parallel. Move-only; const members
/// thread-safe; call() blocks until the sweep ends.
class fleet {
public:
    /// From a JSON array of host records.
    fleet(const identity &id, std::string_view hosts_json, hostname_verification check = hostname_verification::on) {
        std::string json = detail::c_text(hosts_json, "hosts_json");
        decnet_fleet *raw = nullptr;
        detail::check(decnet_fleet_new(id.get(), json.c_str(), static_cast<std::uint32_t>(check), &raw));
        handle_ = decltype(handle_)(raw);
    }
    /// Number of hosts.
    std::size_t size() const {
        std::size_t out = 0;
        detail::check(decnet_fleet_size(get(), &out));
        return out;
    }
    /// Timeouts of `profile` for every host.
    void set_timeouts(decnet_profile profile, const timeouts &value) const {
        detail::check(decnet_fleet_set_timeouts(get(), static_cast<std::uint32_t>(profile), &value));
    }
    /// TLS session resumption for every host.
    void set_session_resumption(bool on) const { detail::check(decnet_fleet_set_session_resumption(get(), on)); }
    /// Handshakes completed so far over all hosts.
    handshake_counts get_handshake_counts() const {
        handshake_counts out{};
        detail::check(decnet_fleet_handshake_counts(get(), &out));
        return out;
    }
    /// Default hosts in flight at once.
    void set_concurrency(std::size_t concurrency) const {
        detail::check(decnet_fleet_set_concurrency(get(), concurrency));
    }
    /// Caps the connections the fleet's sweeps hold open at once (see
    /// decnet_fleet_set_max_open_connections).
    void set_max_open_connections(std::size_t limit) const {
        detail::check(decnet_fleet_set_max_open_connections(get(), limit));
    }
    /// The cap on open connections, those open now, and the evictions.
    decnet_connection_budget get_connection_budget() const {
        decnet_connection_budget out{};
        detail::check(decnet_fleet_connection_budget(get(), &out));
        return out;
    }
    /// Default sweep deadline (0: none).
    void set_deadline_ms(std::uint64_t deadline_ms) const {
        detail::check(decnet_fleet_set_deadline_ms(get(), deadline_ms));
    }
    /// Nice levels (0 to 19) below the calling thread at which the sweeps'
    /// worker threads run (see decnet_fleet_set_sweep_niceness).
    void set_sweep_niceness(std::uint32_t increment) const {
        detail::check(decnet_fleet_set_sweep_niceness(get(), increment));
    }
    /// Runs `rpc` over the fleet (plan none: every host, no arguments) and
    /// returns the results array as JSON text.
    std::string call(std::string_view rpc, std::optional<std::string_view> plan_json = std::nullopt,
                     std::optional<sweep_options> options = std::nullopt) const {
        return run(rpc, plan_json, options, nullptr, nullptr);
    }
    /// As call(), passing each host's result (JSON text, borrowed for the
    /// call) to `on_host` as it completes, on the calling thread. `on_host`
    /// returns void or bool (false stops the sweep). If it throws, the
    /// sweep is stopped and the exception is rethrown here once the C call
    /// has returned; it never unwinds through the library.
    template <typename F>
    std::string call(std::string_view rpc, std::optional<std::string_view> plan_json,
                     std::optional<sweep_options> options, F &&on_host) const {
        using callable = std::remove_reference_t<F>;
        trampoline_state<callable> state{on_host, nullptr};
        std::string results;
        try {
            results = run(rpc, plan_json, options, &trampoline<callable>, &state);
        } catch (...) {
            // The callable's exception wins over an error of the same call.
            if (state.thrown) {
                std::rethrow_exception(state.thrown);
            }
            throw;
        }
        if (state.thrown) {
            std::rethrow_exception(state.thrown);
        }
        return results;
    }
    /// False once moved from.
    bool valid() const noexcept { return get() != nullptr; }
    /// The C handle, still owned by this object.
    const decnet_fleet *get() const noexcept { return handle_.get(); }

private:
    template <typename F>
    struct trampoline_state {
        F &callable;
        std::exception_ptr thrown;
    };

    template <typename F>
    static int trampoline(const char *host_result_json, void *user_data) noexcept {
        auto *state = static_cast<trampoline_state<F> *>(user_data);
        try {
            std::string_view text(host_result_json);
            if constexpr (std::is_void_v<std::invoke_result_t<F &, std::string_view>>) {
                std::invoke(state->callable, text);
                return 0;
            } else {
                return std::invoke(state->callable, text) ? 0 : 1;
            }
        } catch (...) {
            state->thrown = std::current_exception();
            return 1;
        }
    }

    std::string run(std::string_view rpc, std::optional<std::string_view> plan_json,
                    std::optional<sweep_options> options, decnet_fleet_callback cb, void *data) const {
        std::string name = detail::c_text(rpc, "rpc");
        std::optional<std::string> plan = detail::c_optional(plan_json, "plan_json");
        return detail::text_call([&](char **out) {
            return decnet_fleet_call(get(), name.c_str(), detail::c_or_null(plan), options ? &*options : nullptr, cb,
                                     data, out);
        });
    }
    detail::handle<decnet_fleet, &decnet_fleet_free> handle_;
};

/// The process-wide log hook: while it lives, `callable(level, event_json)`
/// receives the library's events of `min_level` and more severe (level a
/// decnet_log_level; the text is borrowed for the call). The callable runs
/// on the thread doing the work, concurrently when several threads call
/// the library, so it must be thread-safe. An exception it throws is kept
/// and rethrown by the wrapper call that raised the event, once that C
/// call has returned (raw C calls never see it; the first one on a thread
/// wins, later ones while pending are dropped). Destroying the hook
/// removes it; destroy it only when no other thread is inside a library
/// call. Move-only; at most one should live at a time (the last installed
/// wins, and destroying an older one removes the newer).
class log_hook {
public:
    /// Installs `callable` for events at `min_level` and more severe.
    template <typename F>
    log_hook(decnet_log_level min_level, F callable)
        : callable_(std::make_unique<std::function<void(decnet_log_level, std::string_view)>>(std::move(callable))) {
        detail::check(decnet_set_log_callback(static_cast<std::uint32_t>(min_level), &trampoline, callable_.get()));
    }
    log_hook(const log_hook &) = delete;
    log_hook &operator=(const log_hook &) = delete;
    log_hook(log_hook &&) noexcept = default;
    log_hook &operator=(log_hook &&other) noexcept {
        if (this != &other) {
            remove();
            callable_ = std::move(other.callable_);
        }
        return *this;
    }
    ~log_hook() { remove(); }

private:
    void remove() noexcept {
        if (callable_) {
            decnet_set_log_callback(0, nullptr, nullptr);
            callable_.reset();
        }
    }
    static void trampoline(std::uint32_t level, const char *event_json, void *user_data) noexcept {
        try {
            (*static_cast<std::function<void(decnet_log_level, std::string_view)> *>(user_data))(
                static_cast<decnet_log_level>(level), std::string_view(event_json));
        } catch (...) {
            if (!detail::pending_log_exception) {
                detail::pending_log_exception = std::current_exception();
            }
        }
    }
    std::unique_ptr<std::function<void(decnet_log_level, std::string_view)>> callable_;
};

/// Enrolls worker `name` at `address`; returns its host record JSON.
inline std::string enroll(std::optional<std::string_view> ca_dir, std::string_view name, std::string_view address,
                          const std::vector<std::string_view> &sans = {}, std::uint16_t agent_port = 0,
                          bool with_updater = false, bool reissue = false) {
    std::optional<std::string> dir = detail::c_optional(ca_dir, "ca_dir");
    std::string n = detail::c_text(name, "name"), a = detail::c_text(address, "address");
    detail::c_list list(sans, "sans");
    return detail::text_call([&](char **out) {
        return decnet_enroll(detail::c_or_null(dir), n.c_str(), a.c_str(), list.data(), list.size(), agent_port,
                             with_updater, reissue, out);
    });
}

/// Ensures a CA in `ca_dir` (none: the default); returns its fingerprint.
inline std::string pki_ensure_ca(std::optional<std::string_view> ca_dir = std::nullopt) {
    std::optional<std::string> dir = detail::c_optional(ca_dir, "ca_dir");
    return detail::text_call([&](char **out) { return decnet_pki_ensure_ca(detail::c_or_null(dir), out); });
}

/// Issues a worker bundle into `out_dir`; returns its fingerprint (the pin).
inline std::string pki_issue_worker_bundle(std::optional<std::string_view> ca_dir, std::string_view name,
                                           const std::vector<std::string_view> &sans, std::uint32_t validity_days,
                                           std::string_view out_dir) {
    std::optional<std::string> dir = detail::c_optional(ca_dir, "ca_dir");
    std::string n = detail::c_text(name, "name"), o = detail::c_text(out_dir, "out_dir");
    detail::c_list list(sans, "sans");
    return detail::text_call([&](char **out) {
        return decnet_pki_issue_worker_bundle(detail::c_or_null(dir), n.c_str(), list.data(), list.size(),
                                              validity_days, o.c_str(), out);
    });
}

/// Fingerprint of the certificate file at `path` (PEM or DER).
inline std::string fingerprint_file(std::string_view path) {
    std::string p = detail::c_text(path, "path");
    return detail::text_call([&](char **out) { return decnet_fingerprint_file(p.c_str(), out); });
}

/// The version hash of a hydrated topology.
inline std::string topology_hash(std::string_view hydrated_json) {
    std::string h = detail::c_text(hydrated_json, "hydrated_json");
    return detail::text_call([&](char **out) { return decnet_topology_hash(h.c_str(), out); });
}

}  // namespace decnet

#endif  // DECNET_AGENT_CLIENT_HPP
