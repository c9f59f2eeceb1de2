//! `decnet_completions`: calls that return at once and complete on the
//! library's threads, watched through one file descriptor.

use std::ffi::{c_char, c_int};
use std::os::fd::AsRawFd;

use serde_json::Value;

use super::client::decnet_client;
use super::fleet::{decnet_fleet, decnet_sweep_options, plan_of, sweep_options};
use super::guard::{
    self, guard, handle, optional_str, out_ptr, required_str, write_string, Failure,
};
use super::result::decnet_result;
use crate::completions::Completions;
use crate::error::Error;
use crate::fleet::{Call, Flow, RPC_NAMES};

/// A completion queue: calls submitted to it run on its own threads, and
/// their results wait in it until `decnet_completions_pop` takes them.
/// Opaque.
///
/// For event loops: watch `decnet_completions_fd` for readability (epoll,
/// poll, asyncio's `add_reader`); when it is readable, pop until nothing is
/// left. No callback runs on another thread and nothing blocks the loop.
/// Thread-safe: any thread may submit, withdraw and pop.
pub struct decnet_completions {
    inner: Completions,
}

/// Makes a completion queue that runs at most `max_threads` calls at once
/// (1 to 1024; threads start as calls need them and stay until the queue
/// is freed), on threads `niceness` nice levels below the caller's (0 to
/// 19: their TLS work then yields the CPU to the loop's thread; Linux
/// only, elsewhere no effect).
///
/// Ownership: `*out` is the caller's; free it with
/// `decnet_completions_free`.
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`,
/// `DECNET_ERR_INVALID_ARGUMENT`, `DECNET_ERR_INTERNAL` (no pipe could be
/// made), `DECNET_ERR_PANIC`.
#[no_mangle]
pub unsafe extern "C" fn decnet_completions_new(
    max_threads: u32,
    niceness: u32,
    out: *mut *mut decnet_completions,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let slot = unsafe { out_ptr(out, "out") }?;
        let threads = usize::try_from(max_threads).unwrap_or(usize::MAX);
        let inner = Completions::new(threads, niceness)?;
        *slot = Box::into_raw(Box::new(decnet_completions { inner }));
        Ok(())
    })
}

/// Writes to `*out_fd` the descriptor to watch: readable when completions
/// wait; when it is, pop until `decnet_completions_pop` gives NULL (which
/// also resets it; it may report readiness once more with nothing waiting,
/// and popping then gives NULL at once). It stays the queue's: never read,
/// write or close it, and stop watching it before freeing the queue.
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`, `DECNET_ERR_PANIC`.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn decnet_completions_fd(
    completions: *const decnet_completions,
    out_fd: *mut c_int,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let out_fd = unsafe { out_fd.as_mut() }.ok_or(Failure::Null("out_fd"))?;
        *out_fd = -1;
        let completions = unsafe { handle(completions, "completions") }?;
        *out_fd = completions.inner.notify_fd().as_raw_fd();
        Ok(())
    })
}

/// Starts one call of `client` on the queue's threads and returns at once;
/// its result comes back from `decnet_completions_pop` under `tag`, which
/// names this call until its completion is popped or it is withdrawn.
///
/// `rpc` is `connect` (open and verify one connection, as
/// `decnet_client_connect`; the result is null) or one of the RPCs of
/// `decnet_fleet_call`, with `args_json` NULL or a JSON object holding the
/// arguments named as there (`config`, `dry_run`, `decky_id`, ...). The
/// client may be freed while its call runs: the call keeps what it needs.
///
/// Results: `DECNET_OK` (queued); `DECNET_ERR_NULL_ARGUMENT`;
/// `DECNET_ERR_INVALID_ARGUMENT` (unknown RPC, malformed or missing
/// arguments, a tag still in use: nothing was queued); `DECNET_ERR_INTERNAL` (no thread could
/// start); `DECNET_ERR_PANIC`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn decnet_client_submit(
    client: *const decnet_client,
    completions: *const decnet_completions,
    rpc: *const c_char,
    args_json: *const c_char,
    tag: u64,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let client = unsafe { handle(client, "client") }?.inner.clone();
        let completions = unsafe { handle(completions, "completions") }?;
        let rpc = unsafe { required_str(rpc, "rpc") }?;
        let args = match unsafe { optional_str(args_json, "args_json") }? {
            Some(text) => crate::json::from_str(text).map_err(|e| {
                Failure::Library(Error::invalid("args_json", format!("malformed JSON: {e}")))
            })?,
            None => Value::Null,
        };
        if rpc == "connect" {
            if !args.is_null() {
                return Err(Error::invalid("args_json", "connect takes no arguments").into());
            }
            completions.inner.submit(tag, move || {
                client.connect()?;
                Ok(Value::Null)
            })?;
            return Ok(());
        }
        if !RPC_NAMES.contains(&rpc) {
            return Err(Error::invalid(
                "rpc",
                format!(
                    "unknown RPC {rpc:?}; expected connect or one of {}",
                    RPC_NAMES.join(", ")
                ),
            )
            .into());
        }
        let call = Call::from_json(rpc, &args).map_err(|e| match e {
            Error::InvalidArgument { argument, reason } if argument != "args" => {
                Error::invalid(format!("args_json.{argument}"), reason)
            }
            Error::InvalidArgument { reason, .. } => Error::invalid("args_json", reason),
            other => other,
        })?;
        completions.inner.submit(tag, move || call.run(&client))?;
        Ok(())
    })
}

/// Frees `client` as `decnet_client_free` does, except that dropping its
/// connections (TLS state, sockets) happens on the queue's threads: the call
/// returns at once. NULL `client` is a no-op; a NULL `completions` frees
/// it here.
///
/// Call it once per client, after every thread has finished using the
/// handle, instead of `decnet_client_free`.
#[no_mangle]
pub unsafe extern "C" fn decnet_completions_free_client(
    completions: *const decnet_completions,
    client: *mut decnet_client,
) {
    if client.is_null() {
        return;
    }
    guard::release(|| {
        // SAFETY: a handle made by `decnet_client_new*`, freed once per the contract.
        let client = unsafe { Box::from_raw(client) };
        // SAFETY: NULL or a live queue per the contract.
        if let Some(completions) = unsafe { completions.as_ref() } {
            // The closure owns the client; if it cannot be queued it is
            // dropped here, which frees the client on this thread.
            let _ = completions.inner.detach(move || drop(client));
        }
    });
}

/// Starts a sweep of `fleet` on the queue's threads and returns at once:
/// `rpc`, `plan_json` and `options` as in `decnet_fleet_call` (checked
/// now: an error queues nothing). As hosts complete, each one's result
/// object comes from `decnet_completions_pop` under `tag` with `outcome`
/// `"progress"` (`result`: the host's result, as `decnet_fleet_call`'s
/// callback gets it); last comes the sweep's own completion, `"ok"` with
/// `result` the array `decnet_fleet_call` returns (every planned host, in
/// plan order), or `"error"`. The sweep's deadline counts from when a
/// thread starts it. `decnet_completions_withdraw` on a running sweep stops
/// it: no host starts after the next result. The fleet may be freed while
/// the sweep runs.
///
/// Results: `DECNET_OK` (queued); `DECNET_ERR_NULL_ARGUMENT`;
/// `DECNET_ERR_INVALID_ARGUMENT` (unknown RPC, malformed plan, unknown or
/// repeated host, bad options, a tag in use: nothing was queued);
/// `DECNET_ERR_INTERNAL`; `DECNET_ERR_PANIC`.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn decnet_fleet_submit(
    fleet: *const decnet_fleet,
    completions: *const decnet_completions,
    rpc: *const c_char,
    plan_json: *const c_char,
    options: *const decnet_sweep_options,
    tag: u64,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let fleet = unsafe { handle(fleet, "fleet") }?;
        let completions = unsafe { handle(completions, "completions") }?;
        // SAFETY: forwarded contract.
        let plan = unsafe { plan_of(fleet, rpc, plan_json) }?;
        // SAFETY: NULL or a readable struct per the contract.
        let options = unsafe { sweep_options(options) };
        let sweep = fleet
            .inner
            .prepare_sweep(plan, options)
            .map_err(|e| Failure::from(e).argument_named("plan", "plan_json"))?;
        completions.inner.submit_streaming(tag, move |progress| {
            let results = sweep.run(|result| {
                progress.post(result.to_json());
                if progress.stop_asked() {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            })?;
            Ok(Value::Array(results.iter().map(|r| r.to_json()).collect()))
        })?;
        Ok(())
    })
}

/// Takes back the queued call with `tag` if no thread has started it.
/// `*out_withdrawn` true: nothing of it was sent, no completion will come
/// and the tag is free again; false: it is running or done, and its
/// completion comes (or came) from `decnet_completions_pop`, or no call has
/// that tag. A running sweep (`decnet_fleet_submit`) is asked to stop.
///
/// Results: `DECNET_OK`, `DECNET_ERR_NULL_ARGUMENT`, `DECNET_ERR_PANIC`.
/// Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn decnet_completions_withdraw(
    completions: *const decnet_completions,
    tag: u64,
    out_withdrawn: *mut bool,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let out = unsafe { out_withdrawn.as_mut() }.ok_or(Failure::Null("out_withdrawn"))?;
        *out = false;
        let completions = unsafe { handle(completions, "completions") }?;
        *out = completions.inner.withdraw(tag);
        Ok(())
    })
}

/// Takes the oldest finished call (or a sweep's step). When one was
/// waiting, `*out_tag` is its tag and `*out_json` a JSON object: `tag`,
/// `elapsed_ms`, `outcome` (`"ok"`, `"error"`, or a sweep's `"progress"`),
/// and `result` (the worker's answer; null for `connect`) or `error` (`kind`, `code`, `message`, `http_status`,
/// `body`, ... as a `decnet_fleet_call` host's error). When none was
/// waiting, `*out_json` is NULL and `*out_tag` 0, and the descriptor's
/// readiness is reset. Never blocks on the queue's threads.
///
/// Ownership: `*out_json` is the caller's; free it with
/// `decnet_string_free`.
///
/// Results: `DECNET_OK` (whether or not one was waiting),
/// `DECNET_ERR_NULL_ARGUMENT`, `DECNET_ERR_PANIC`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn decnet_completions_pop(
    completions: *const decnet_completions,
    out_tag: *mut u64,
    out_json: *mut *mut c_char,
) -> decnet_result {
    guard(|| {
        // SAFETY: the caller's pointers follow the module's conventions.
        let tag = unsafe { out_tag.as_mut() }.ok_or(Failure::Null("out_tag"))?;
        *tag = 0;
        let slot = unsafe { out_ptr(out_json, "out_json") }?;
        let completions = unsafe { handle(completions, "completions") }?;
        if let Some(completion) = completions.inner.pop() {
            *tag = completion.tag;
            write_string(slot, completion.to_json().to_string());
        }
        Ok(())
    })
}

/// Frees a completion queue without waiting. NULL is a no-op. Calls not
/// yet started are dropped (never sent); calls in flight finish on their
/// threads within their own timeouts, and their results are discarded;
/// then those threads end and the descriptor closes. Stop watching the
/// descriptor first.
///
/// Call it once, after every thread has finished using the handle.
#[no_mangle]
pub unsafe extern "C" fn decnet_completions_free(completions: *mut decnet_completions) {
    if completions.is_null() {
        return;
    }
    guard::release(|| {
        // SAFETY: a handle made by `decnet_completions_new`, freed once per the contract.
        drop(unsafe { Box::from_raw(completions) });
    });
}
