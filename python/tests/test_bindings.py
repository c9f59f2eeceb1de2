"""The ctypes layer itself: declarations, library lookup, exceptions, argument conversion."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from ctypes import POINTER, byref, c_bool, c_char, c_char_p, c_int, c_size_t, c_uint16, c_uint32, c_uint64
from pathlib import Path

import pytest

import decnet_agent_client as dac

REPO = Path(__file__).resolve().parents[2]
HEADER = REPO / "include" / "decnet_agent_client.h"
MODULE = Path(dac.__file__).resolve()
PACKAGE = MODULE.parent


def _copy_package(directory: Path) -> None:
    """Copies the package's Python sources (not a library it may carry) into ``directory``."""
    shutil.copytree(PACKAGE, directory / PACKAGE.name,
                    ignore=shutil.ignore_patterns("*.so", "*.dylib", "*.dll", "__pycache__"))

# ---------------------------------------------------------------------------
# Every function of the header is declared
# ---------------------------------------------------------------------------

_DECLARATION = re.compile(r"^([A-Za-z_][\w \*]*?)\s*\b(decnet_\w+)\s*\(([^;]*?)\)\s*;", re.M | re.S)


def _normalise(c_type: str) -> str:
    c_type = re.sub(r"\b(struct|enum)\s+", "", c_type)
    c_type = re.sub(r"\s*\*\s*", " * ", c_type)
    return " ".join(c_type.split())


def _split_parameter(parameter: str) -> str:
    """The type of one parameter declaration (drops the trailing name)."""
    match = re.match(r"^(.*?[\s\*])(\w+)$", parameter.strip(), re.S)
    assert match, parameter
    return _normalise(match.group(1))


def header_functions():
    """{name: (return type, [parameter types])} parsed from the header."""
    text = HEADER.read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)  # drop comments
    functions = {}
    for ret, name, params in _DECLARATION.findall(text):
        params = params.strip()
        types = [] if params in ("", "void") else [_split_parameter(p) for p in params.split(",")]
        functions[name] = (_normalise(ret), types)
    return functions


_EXPECTED_CTYPES = {
    "void": None,
    "decnet_result": c_int,
    "decnet_timeout_phase": c_uint32,
    "bool": c_bool,
    "uint16_t": c_uint16,
    "uint32_t": c_uint32,
    "uint64_t": c_uint64,
    "size_t": c_size_t,
    "const char *": c_char_p,
    "char *": POINTER(c_char),
    "char * *": POINTER(POINTER(c_char)),
    "const char * const *": POINTER(c_char_p),
    "const decnet_identity *": dac._IdentityPtr,
    "decnet_identity *": dac._IdentityPtr,
    "decnet_identity * *": POINTER(dac._IdentityPtr),
    "const decnet_client *": dac._ClientPtr,
    "decnet_client *": dac._ClientPtr,
    "decnet_client * *": POINTER(dac._ClientPtr),
    "decnet_timeouts *": POINTER(dac._CTimeouts),
    "const decnet_timeouts *": POINTER(dac._CTimeouts),
    "decnet_handshake_counts *": POINTER(dac._CHandshakeCounts),
    "decnet_connection_budget *": POINTER(dac._CConnectionBudget),
    "int32_t": ctypes.c_int32,
    "bool *": POINTER(c_bool),
    "const uint8_t *": POINTER(ctypes.c_uint8),
    "const decnet_updater *": dac._UpdaterPtr,
    "decnet_updater *": dac._UpdaterPtr,
    "decnet_updater * *": POINTER(dac._UpdaterPtr),
    "const decnet_fleet *": dac._FleetPtr,
    "decnet_fleet *": dac._FleetPtr,
    "decnet_fleet * *": POINTER(dac._FleetPtr),
    "const decnet_updater_fleet *": dac._UpdaterFleetPtr,
    "decnet_updater_fleet *": dac._UpdaterFleetPtr,
    "decnet_updater_fleet * *": POINTER(dac._UpdaterFleetPtr),
    "size_t *": POINTER(c_size_t),
    "const decnet_completions *": dac._CompletionsPtr,
    "decnet_completions *": dac._CompletionsPtr,
    "decnet_completions * *": POINTER(dac._CompletionsPtr),
    "int *": POINTER(ctypes.c_int),
    "uint64_t *": POINTER(c_uint64),
    "const decnet_sweep_options *": POINTER(dac._CSweepOptions),
    "decnet_fleet_callback": dac._FleetCallback,
    "decnet_log_callback": dac._LogCallback,
    "void *": ctypes.c_void_p,
}


def test_header_parses_to_every_exported_function():
    functions = header_functions()
    assert len(functions) >= 35, sorted(functions)
    assert "decnet_client_health" in functions
    assert functions["decnet_version"] == ("const char *", [])
    assert functions["decnet_client_mutate"][1] == [
        "const decnet_client *", "const char *", "const char * const *", "size_t", "bool", "char * *"]


def test_every_header_function_has_argtypes_and_restype():
    functions = header_functions()
    assert set(functions) == set(dac._SIGNATURES), "the module's table and the header differ"
    for name, (ret, params) in functions.items():
        function = getattr(dac.lib, name)
        assert function.argtypes is not None, f"{name}: argtypes not set"
        assert function.restype is _EXPECTED_CTYPES[ret], f"{name}: restype {function.restype} for {ret!r}"
        assert list(function.argtypes) == [_EXPECTED_CTYPES[p] for p in params], \
            f"{name}: argtypes {function.argtypes} for {params}"


def test_enum_and_struct_layout():
    assert ctypes.sizeof(c_int) == 4  # C enums are int-sized on every supported ABI
    assert ctypes.sizeof(dac._CTimeouts) == 32
    assert [f[0] for f in dac._CTimeouts._fields_] == ["connect_ms", "read_ms", "write_ms", "pool_ms"]
    assert ctypes.sizeof(dac._CHandshakeCounts) == 16
    assert [f[0] for f in dac._CHandshakeCounts._fields_] == ["full", "resumed"]
    header = HEADER.read_text()
    for name, code in dac.PROFILES.items():
        constant = "DECNET_PROFILE_" + name.upper().replace("-", "_")
        assert re.search(rf"\b{constant} = {code}\b", header), constant


# ---------------------------------------------------------------------------
# Static strings and result codes
# ---------------------------------------------------------------------------


def test_version_is_the_crate_version():
    cargo = (REPO / "Cargo.toml").read_text()
    expected = re.search(r'^version = "([^"]+)"', cargo, re.M).group(1)
    assert dac.version() == expected
    assert dac.version() == dac.version()  # a static string, read twice, never freed


def test_result_names_and_exception_classes_cover_every_code():
    header = HEADER.read_text()
    codes = {int(v): k for k, v in re.findall(r"\b(DECNET_(?:OK|ERR_\w+)) = (\d+)", header)}
    assert sorted(codes) == list(range(15))
    for code in range(1, 15):
        cls = dac._ERROR_CLASSES[code]
        assert issubclass(cls, dac.DecnetError)
        assert cls.code == code
        kind = dac._result_name(code)
        assert codes[code] == "DECNET_ERR_" + kind.upper(), (code, kind)
        error = cls("message", code=code)
        assert (error.code, error.kind, error.message, str(error)) == (code, kind, "message", "message")
    assert dac._result_name(0) == "ok"
    assert dac._result_name(15) == "unknown"
    assert dac._result_name(2**32 - 1) == "unknown"


def test_exception_hierarchy():
    assert issubclass(dac.AgentTimeoutError, TimeoutError)
    assert issubclass(dac.AgentTimeoutError, dac.DecnetError)
    assert issubclass(dac.InvalidArgumentError, ValueError)
    error = dac.AgentTimeoutError("timed out", code=8)
    assert str(error) == "timed out" and error.kind == "timeout"
    for name in ("IOError", "TimeoutError", "ConnectionError"):  # no builtin is shadowed
        assert name not in vars(dac)
    error = dac.HTTPStatusError("HTTP 422", code=9, status=422,
                                body='{"detail": [{"loc": ["body"], "msg": "bad"}]}')
    assert error.detail == [{"loc": ["body"], "msg": "bad"}]
    assert dac.HTTPStatusError("x", code=9, status=502, body="<html>").detail is None


def test_null_argument_through_raw_ctypes():
    """NullArgumentError is only reachable by passing NULL to the raw functions."""
    out = POINTER(c_char)()
    result = dac.lib.decnet_client_health(None, byref(out))
    error = dac.last_error(result)  # same thread, right after the call
    assert isinstance(error, dac.NullArgumentError)
    assert (error.code, error.kind) == (13, "null_argument")
    assert "client" in error.message
    assert not out  # out-parameters stay NULL on failure
    assert dac.lib.decnet_last_error_result() == 13
    # NULL out-parameter, named in the message
    result = dac.lib.decnet_topology_hash(b"{}", None)
    error = dac.last_error(result)
    assert isinstance(error, dac.NullArgumentError) and "out" in error.message
    # Free functions accept NULL.
    dac.lib.decnet_string_free(None)
    dac.lib.decnet_client_free(None)
    dac.lib.decnet_identity_free(None)


def test_unreachable_kinds_are_documented():
    """InternalError and PanicError mark library bugs: no input through this API provokes one,
    so they are only checked for their mapping (above)."""
    assert dac._ERROR_CLASSES[12] is dac.InternalError
    assert dac._ERROR_CLASSES[14] is dac.PanicError


def test_last_error_detail_is_per_thread():
    import threading

    with pytest.raises(dac.InvalidArgumentError):
        dac.topology_hash("[1]")
    seen = {}

    def other():
        seen["result"] = dac.lib.decnet_last_error_result()
        seen["message"] = dac.lib.decnet_last_error_message()

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen == {"result": 0, "message": b""}
    assert dac.lib.decnet_last_error_result() == 1


# ---------------------------------------------------------------------------
# Finding the library (fresh interpreters)
# ---------------------------------------------------------------------------


def _import_in(directory: Path, env_lib):
    env = {k: v for k, v in os.environ.items() if k != dac.LIBRARY_ENV}
    if env_lib is not None:
        env[dac.LIBRARY_ENV] = str(env_lib)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run(
        [sys.executable, "-c", "import decnet_agent_client as m; print(m.library_path())"],
        cwd=directory, env=env, capture_output=True, text=True, timeout=60)


def test_lookup_env_var_wins(tmp_path):
    _copy_package(tmp_path)
    run = _import_in(tmp_path, dac.library_path())
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == dac.library_path()
    # A folder works too.
    run = _import_in(tmp_path, Path(dac.library_path()).parent)
    assert run.returncode == 0, run.stderr


def test_lookup_beside_the_module(tmp_path):
    _copy_package(tmp_path)
    inside = tmp_path / PACKAGE.name / "libdecnet_agent_client.so"
    shutil.copy(dac.library_path(), inside)
    run = _import_in(tmp_path, None)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(inside)


def test_lookup_target_folder(tmp_path):
    (tmp_path / "python").mkdir()
    (tmp_path / "target" / "debug").mkdir(parents=True)
    _copy_package(tmp_path / "python")
    shutil.copy(dac.library_path(), tmp_path / "target" / "debug" / "libdecnet_agent_client.so")
    run = _import_in(tmp_path / "python", None)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(tmp_path / "target" / "debug" / "libdecnet_agent_client.so")


def test_lookup_failure_lists_every_place(tmp_path):
    (tmp_path / "python").mkdir()
    _copy_package(tmp_path / "python")
    run = _import_in(tmp_path / "python", None)
    assert run.returncode != 0
    assert "ImportError" in run.stderr
    for place in (tmp_path / "python" / PACKAGE.name / "libdecnet_agent_client.so",
                  tmp_path / "target" / "release" / "libdecnet_agent_client.so",
                  tmp_path / "target" / "debug" / "libdecnet_agent_client.so"):
        assert str(place) in run.stderr
    assert dac.LIBRARY_ENV in run.stderr


def test_lookup_explicit_path_is_not_second_guessed(tmp_path):
    _copy_package(tmp_path)
    shutil.copy(dac.library_path(), tmp_path / PACKAGE.name / "libdecnet_agent_client.so")  # would be found
    missing = tmp_path / "nowhere" / "libdecnet_agent_client.so"
    run = _import_in(tmp_path, missing)
    assert run.returncode != 0
    assert "ImportError" in run.stderr and str(missing) in run.stderr


# ---------------------------------------------------------------------------
# Argument conversion and local validation
# ---------------------------------------------------------------------------


def test_text_with_nul_is_refused_not_truncated(identity):
    with pytest.raises(dac.InvalidArgumentError, match="NUL"):
        dac.Client.connect_to(identity, "127.0.0.1\0evil", 1, None)
    with pytest.raises(dac.InvalidArgumentError, match="NUL"):
        dac.fingerprint_file("/etc/passwd\0x")


def test_malformed_json_and_bad_host_records(identity):
    with pytest.raises(dac.InvalidArgumentError, match="malformed JSON"):
        dac.Client.from_host(identity, "{not json")
    with pytest.raises(dac.InvalidArgumentError, match="address"):
        dac.Client.from_host(identity, {"agent_port": 8765})
    with pytest.raises(dac.InvalidArgumentError, match="agent_port"):
        dac.Client.from_host(identity, {"address": "127.0.0.1", "agent_port": 70000})
    with pytest.raises(dac.InvalidArgumentError, match="client_cert_fingerprint"):
        dac.Client.from_host(identity, {"address": "127.0.0.1", "client_cert_fingerprint": "abc"})
    with pytest.raises(dac.InvalidArgumentError, match="fingerprint|pin"):  # see report: names `fingerprint`
        dac.Client.connect_to(identity, "127.0.0.1", 1, pin="zz" * 32)
    with pytest.raises(dac.InvalidArgumentError, match="port"):
        dac.Client.connect_to(identity, "127.0.0.1", 65536, None)
    with pytest.raises(dac.InvalidArgumentError):
        dac.Client.from_host(identity, {"address": object()})  # not JSON-serialisable


def test_host_record_forms_and_describe(identity):
    record = {"address": "127.0.0.1", "agent_port": None, "name": "w-9", "uuid": "u", "notes": [1]}
    with dac.Client.from_host(identity, record, allow_unpinned=True) as by_dict, \
            dac.Client.from_host(identity, '{"address": "127.0.0.1", "agent_port": 0}',
                                 allow_unpinned=True) as by_text, \
            dac.Client.connect_to(identity, "::1", 9000, None) as v6:
        assert by_dict.describe() == "AgentClient(name='w-9', address='127.0.0.1', port=8765)"
        assert repr(by_dict) == by_dict.describe()
        assert by_text.describe() == "AgentClient(name=None, address='127.0.0.1', port=8765)"
        assert v6.describe() == "AgentClient(name=None, address='::1', port=9000)"


def test_timeouts_defaults_and_changes(identity):
    with dac.Client.connect_to(identity, "127.0.0.1", 1, None) as client:
        assert client.get_timeouts("control") == (5, 15, 5, 5)
        assert client.get_timeouts("deploy") == (10, 600, 30, 5)
        assert client.get_timeouts("topology-apply") == (10, 600, 30, 5)
        assert client.get_timeouts("topology-teardown") == (10, 300, 30, 5)
        assert client.get_timeouts(3) == client.get_timeouts("topology-teardown")
        new = client.set_timeouts("topology-apply", read=1200.5, connect=0.25)
        assert new == dac.Timeouts(connect=0.25, read=1200.5, write=30.0, pool=5.0)
        assert client.get_timeouts("topology-apply") == new
        assert client.get_timeouts("deploy") == (10, 600, 30, 5)  # other profiles untouched
        # a positive sub-millisecond value is never rounded down to "zero"
        assert client.set_timeouts("control", read=0.0001).read == 0.001
        with pytest.raises(dac.InvalidArgumentError, match="profile"):
            client.get_timeouts("bulk")
        with pytest.raises(dac.InvalidArgumentError, match="profile"):
            client.get_timeouts(4)  # refused by the library
        for wide in (2**32 + 2, 2**64, -1, -(2**32) + 2):  # never truncated to a valid code
            with pytest.raises(dac.InvalidArgumentError, match="profile"):
                client.get_timeouts(wide)
            with pytest.raises(dac.InvalidArgumentError, match="profile"):
                client.set_timeouts(wide, read=1)
        assert client.get_timeouts("topology-apply") == new
        with pytest.raises(dac.InvalidArgumentError, match="read"):
            client.set_timeouts("control", read=0)  # refused by the library
        with pytest.raises(dac.InvalidArgumentError):
            client.set_timeouts("control", write=-1)
        with pytest.raises(dac.InvalidArgumentError):
            client.set_timeouts("control", connect=float("nan"))
        with pytest.raises(dac.InvalidArgumentError, match="max_response_bytes"):
            client.set_max_response_bytes(0)
        client.set_max_response_bytes(1 << 20)


def test_closed_objects(identity, ca_dir):
    client = dac.Client.connect_to(identity, "127.0.0.1", 1, None)
    client.close()
    client.close()  # idempotent
    assert client.closed and repr(client) == "<Client closed>"
    with pytest.raises(dac.ClosedError):
        client.health()
    with pytest.raises(dac.ClosedError):
        client.get_timeouts("control")
    ident = dac.Identity.ensure(ca_dir)
    fingerprint = ident.fingerprint
    survivor = dac.Client.connect_to(ident, "127.0.0.1", 1, None)
    ident.close()
    assert repr(ident) == "<Identity closed>"
    with pytest.raises(dac.ClosedError):
        dac.Client.connect_to(ident, "127.0.0.1", 1, None)
    assert ident.fingerprint == fingerprint  # cached before close
    # A client keeps its own copy of the identity's material.
    with survivor:
        assert survivor.describe().startswith("AgentClient(")
    with pytest.raises(TypeError):
        dac.Client(None)


def test_public_items_have_docstrings():
    import inspect

    missing = []
    for name in dac.__all__:
        item = getattr(dac, name)
        if inspect.isclass(item) or inspect.isfunction(item):
            if not (item.__doc__ or "").strip():
                missing.append(name)
        if inspect.isclass(item) and item.__module__ == dac.__name__:
            for attr, member in vars(item).items():
                if attr.startswith("_") or not callable(getattr(member, "__func__", member)):
                    continue
                if not (getattr(member, "__doc__", None) or "").strip():
                    missing.append(f"{name}.{attr}")
            for attr, member in vars(item).items():
                if isinstance(member, property) and not attr.startswith("_") and not member.__doc__:
                    missing.append(f"{name}.{attr}")
    assert missing == []
    assert dac.__doc__ and "DECNET_AGENT_CLIENT_LIB" in dac.__doc__


def test_unprotected_key_files_are_refused_with_the_fix(identity, ca_dir, tmp_path):
    """A copy of the master bundle whose key others may read is refused, as OpenSSH would."""
    bundle = tmp_path / "bundle"
    shutil.copytree(ca_dir / "master", bundle)
    os.chmod(bundle, 0o700)
    with dac.Identity.load_dir(bundle):
        pass
    os.chmod(bundle / "worker.key", 0o644)
    with pytest.raises(dac.PKIError) as caught:
        dac.Identity.load_dir(bundle)
    assert "0644" in caught.value.message
    assert f"chmod 600 {bundle / 'worker.key'}" in caught.value.message
    os.chmod(bundle / "worker.key", 0o600)
    os.chmod(bundle, 0o777)
    with pytest.raises(dac.PKIError, match="chmod 700"):
        dac.Identity.load_dir(bundle)
