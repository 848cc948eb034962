//! The functions a module imports from the host: proxy-wasm ABI 0.2.1 (`env.proxy_*`) and the WASI
//! preview1 calls Rust's `wasm32-wasip1` std makes, each answering the way Envoy 1.40 does.
//!
//! Status codes follow Envoy's `exports.cc`/`context.cc` (proxy-wasm-cpp-host): for example a
//! header map that is not available answers `BadArgument` for reads of one value and writes but an
//! empty map for "all pairs", an empty buffer or property comes back as a null pointer, and a counter
//! refuses a non-positive increment. Every import Envoy links is linked here so modules load as they
//! would in Envoy; the ones the harness does not model (gRPC, foreign functions, TCP-stream buffers,
//! file seeks) trap with an error naming the call instead of pretending to succeed.

use anyhow::{anyhow, bail, Context as _, Result};
use wasmtime::{Caller, Linker};

use super::abi::{self, BufferType, LogLevel, MapType, MetricKind, Status, StreamType};
use super::properties;
use super::shared::MetricValue;
use super::vm::{copy_out, read, write, HeaderMap, HttpCallRequest, LocalReplySpec, MapAccess, VmState};

type C<'a> = Caller<'a, VmState>;

const OK: i32 = 0;

fn st(s: Status) -> i32 {
    s.code()
}

/// Reads guest memory or returns `InvalidMemoryAccess` from the enclosing hostcall.
macro_rules! mem {
    ($e:expr) => {
        match $e? {
            Ok(v) => v,
            Err(_) => return Ok(st(Status::InvalidMemoryAccess)),
        }
    };
}

macro_rules! link {
    ($l:expr, $name:literal, $f:ident, ($($a:ident: $t:ty),*)) => {
        $l.func_wrap("env", $name, |mut c: C<'_>, $($a: $t),*| -> wasmtime::Result<i32> {
            $f(&mut c, $($a),*).map_err(|e| wasmtime::Error::from_anyhow(e.context(concat!("hostcall ", $name))))
        })?;
    };
}

macro_rules! wasi {
    ($l:expr, $name:literal, $f:ident, ($($a:ident: $t:ty),*)) => {
        $l.func_wrap("wasi_snapshot_preview1", $name, |mut c: C<'_>, $($a: $t),*| -> wasmtime::Result<i32> {
            $f(&mut c, $($a),*).map_err(|e| wasmtime::Error::from_anyhow(e.context(concat!("WASI call ", $name))))
        })?;
    };
}

/// Links a call Envoy provides but the harness does not model: calling it fails the test.
macro_rules! loud {
    ($l:expr, $module:literal, $name:literal, $why:literal, ($($t:ty),*)) => {
        $l.func_wrap($module, $name, |_c: C<'_>, $(_: $t),*| -> wasmtime::Result<i32> {
            Err(wasmtime::format_err!(concat!(
                $module, ".", $name, " is not modelled by the harness (", $why,
                "); its answer in Envoy is unknown here, so the test fails instead of guessing"
            )))
        })?;
    };
}

/// Builds the linker with every import.
pub fn linker(engine: &wasmtime::Engine) -> Result<Linker<VmState>> {
    let mut l: Linker<VmState> = Linker::new(engine);
    let r = (|| -> wasmtime::Result<()> {
        link!(l, "proxy_log", proxy_log, (level: i32, ptr: i32, len: i32));
        link!(l, "proxy_get_log_level", proxy_get_log_level, (ret: i32));
        link!(l, "proxy_get_current_time_nanoseconds", proxy_get_current_time_nanoseconds, (ret: i32));
        link!(l, "proxy_set_tick_period_milliseconds", proxy_set_tick_period_milliseconds, (period: i32));
        link!(l, "proxy_get_buffer_bytes", proxy_get_buffer_bytes, (t: i32, start: i32, max: i32, pp: i32, sp: i32));
        link!(l, "proxy_set_buffer_bytes", proxy_set_buffer_bytes, (t: i32, start: i32, size: i32, ptr: i32, len: i32));
        link!(l, "proxy_get_buffer_status", proxy_get_buffer_status, (t: i32, len_ptr: i32, flags_ptr: i32));
        link!(l, "proxy_get_header_map_pairs", proxy_get_header_map_pairs, (t: i32, pp: i32, sp: i32));
        link!(l, "proxy_set_header_map_pairs", proxy_set_header_map_pairs, (t: i32, ptr: i32, len: i32));
        link!(l, "proxy_get_header_map_size", proxy_get_header_map_size, (t: i32, ret: i32));
        link!(l, "proxy_get_header_map_value", proxy_get_header_map_value, (t: i32, kp: i32, kl: i32, pp: i32, sp: i32));
        link!(l, "proxy_replace_header_map_value", proxy_replace_header_map_value, (t: i32, kp: i32, kl: i32, vp: i32, vl: i32));
        link!(l, "proxy_add_header_map_value", proxy_add_header_map_value, (t: i32, kp: i32, kl: i32, vp: i32, vl: i32));
        link!(l, "proxy_remove_header_map_value", proxy_remove_header_map_value, (t: i32, kp: i32, kl: i32));
        link!(l, "proxy_get_property", proxy_get_property, (pp: i32, pl: i32, rp: i32, rs: i32));
        link!(l, "proxy_set_property", proxy_set_property, (pp: i32, pl: i32, vp: i32, vl: i32));
        link!(l, "proxy_get_shared_data", proxy_get_shared_data, (kp: i32, kl: i32, pp: i32, sp: i32, cp: i32));
        link!(l, "proxy_set_shared_data", proxy_set_shared_data, (kp: i32, kl: i32, vp: i32, vl: i32, cas: i32));
        link!(l, "proxy_register_shared_queue", proxy_register_shared_queue, (np: i32, nl: i32, ret: i32));
        link!(l, "proxy_resolve_shared_queue", proxy_resolve_shared_queue, (vp: i32, vl: i32, np: i32, nl: i32, ret: i32));
        link!(l, "proxy_enqueue_shared_queue", proxy_enqueue_shared_queue, (id: i32, vp: i32, vl: i32));
        link!(l, "proxy_dequeue_shared_queue", proxy_dequeue_shared_queue, (id: i32, pp: i32, sp: i32));
        link!(l, "proxy_http_call", proxy_http_call, (up: i32, ul: i32, hp: i32, hl: i32, bp: i32, bl: i32, tp: i32, tl: i32, timeout: i32, ret: i32));
        link!(l, "proxy_send_local_response", proxy_send_local_response, (code: i32, dp: i32, dl: i32, bp: i32, bl: i32, hp: i32, hl: i32, grpc: i32));
        link!(l, "proxy_continue_stream", proxy_continue_stream, (t: i32));
        link!(l, "proxy_close_stream", proxy_close_stream, (t: i32));
        link!(l, "proxy_continue_request", proxy_continue_request, ());
        link!(l, "proxy_continue_response", proxy_continue_response, ());
        link!(l, "proxy_clear_route_cache", proxy_clear_route_cache, ());
        link!(l, "proxy_get_status", proxy_get_status, (cp: i32, pp: i32, sp: i32));
        link!(l, "proxy_define_metric", proxy_define_metric, (t: i32, np: i32, nl: i32, ret: i32));
        link!(l, "proxy_increment_metric", proxy_increment_metric, (id: i32, offset: i64));
        link!(l, "proxy_record_metric", proxy_record_metric, (id: i32, value: i64));
        link!(l, "proxy_get_metric", proxy_get_metric, (id: i32, ret: i32));
        link!(l, "proxy_done", proxy_done, ());
        link!(l, "proxy_set_effective_context", proxy_set_effective_context, (id: i32));

        loud!(l, "env", "proxy_grpc_call", "gRPC calls", (i32, i32, i32, i32, i32, i32, i32, i32, i32, i32, i32, i32));
        loud!(l, "env", "proxy_grpc_stream", "gRPC streams", (i32, i32, i32, i32, i32, i32, i32, i32, i32));
        loud!(l, "env", "proxy_grpc_send", "gRPC streams", (i32, i32, i32, i32));
        loud!(l, "env", "proxy_grpc_cancel", "gRPC calls", (i32));
        loud!(l, "env", "proxy_grpc_close", "gRPC calls", (i32));
        loud!(l, "env", "proxy_call_foreign_function", "Envoy foreign functions", (i32, i32, i32, i32, i32, i32));
        loud!(l, "env", "proxy_get_configuration", "the ABI 0.1.0 configuration call", (i32, i32));

        wasi!(l, "fd_write", fd_write, (fd: i32, iovs: i32, n: i32, ret: i32));
        wasi!(l, "fd_read", fd_read, (fd: i32, iovs: i32, n: i32, ret: i32));
        wasi!(l, "fd_fdstat_get", fd_fdstat_get, (fd: i32, ret: i32));
        wasi!(l, "fd_prestat_get", fd_prestat_get, (fd: i32, ret: i32));
        wasi!(l, "fd_prestat_dir_name", fd_prestat_dir_name, (fd: i32, p: i32, n: i32));
        wasi!(l, "environ_sizes_get", environ_sizes_get, (count: i32, size: i32));
        wasi!(l, "environ_get", environ_get, (array: i32, buf: i32));
        wasi!(l, "args_sizes_get", args_sizes_get, (argc: i32, size: i32));
        wasi!(l, "args_get", args_get, (argv: i32, buf: i32));
        wasi!(l, "clock_time_get", clock_time_get, (id: i32, precision: i64, ret: i32));
        wasi!(l, "random_get", random_get, (buf: i32, len: i32));
        l.func_wrap(
            "wasi_snapshot_preview1",
            "path_open",
            |_c: C<'_>,
             _: i32,
             _: i32,
             _: i32,
             _: i32,
             _: i32,
             _: i64,
             _: i64,
             _: i32,
             _: i32|
             -> wasmtime::Result<i32> {
                Ok(44) // ENOENT, as Envoy answers
            },
        )?;
        l.func_wrap("wasi_snapshot_preview1", "proc_exit", |_c: C<'_>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::format_err!(
                "the module called WASI proc_exit({code}); Envoy logs an error and the VM is unusable"
            ))
        })?;
        loud!(
            l,
            "wasi_snapshot_preview1",
            "fd_seek",
            "Envoy logs an error and answers success without seeking",
            (i32, i64, i32, i32)
        );
        loud!(
            l,
            "wasi_snapshot_preview1",
            "fd_close",
            "Envoy logs an error and answers success without closing",
            (i32)
        );
        Ok(())
    })();
    r.map_err(anyhow::Error::from)?;
    Ok(l)
}

// ---- logging, time, ticks ----

fn proxy_log(c: &mut C<'_>, level: i32, ptr: i32, len: i32) -> Result<i32> {
    let Some(level) = LogLevel::from_raw(level) else {
        return Ok(st(Status::BadArgument));
    };
    let msg = mem!(read(c, ptr, len));
    c.data().log(level, String::from_utf8_lossy(&msg).into_owned())?;
    Ok(OK)
}

fn proxy_get_log_level(c: &mut C<'_>, ret: i32) -> Result<i32> {
    let level = c.data().config.log_level as u32;
    mem!(write(c, ret, &level.to_le_bytes()));
    Ok(OK)
}

fn proxy_get_current_time_nanoseconds(c: &mut C<'_>, ret: i32) -> Result<i32> {
    let now = c.data().now()?.unix_nanos;
    mem!(write(c, ret, &now.to_le_bytes()));
    Ok(OK)
}

fn proxy_set_tick_period_milliseconds(c: &mut C<'_>, period: i32) -> Result<i32> {
    let mono = c.data().now()?.monotonic_nanos;
    let s = c.data_mut();
    s.tick_period_ms = period as u32;
    s.tick_anchor_nanos = mono;
    Ok(OK)
}

// ---- buffers ----

/// `f` of the bytes of a buffer as Envoy's `getBuffer` exposes them; `None` is `NotFound`. The
/// bytes are lent, not copied: a caller copies only what it hands the module.
fn with_buffer<T>(s: &mut VmState, bt: BufferType, f: impl FnOnce(&[u8]) -> T) -> Result<Option<T>> {
    let bytes: Option<&[u8]> = match bt {
        // Envoy returns an empty buffer (not "not found") outside the body callbacks.
        BufferType::HttpRequestBody => Some(s.stream().and_then(|st| st.req_body.as_deref()).unwrap_or_default()),
        BufferType::HttpResponseBody => Some(s.stream().and_then(|st| st.resp_body.as_deref()).unwrap_or_default()),
        BufferType::HttpCallResponseBody => s.call_response.as_ref().map(|r| r.body.as_slice()),
        BufferType::VmConfiguration => Some(s.config.vm_config.as_slice()),
        BufferType::PluginConfiguration => s.plugin_config.as_deref(),
        other => bail!("buffer {other:?} is not modelled by the harness (TCP streams, gRPC, foreign calls)"),
    };
    Ok(bytes.map(f))
}

fn proxy_get_buffer_bytes(c: &mut C<'_>, t: i32, start: i32, max: i32, pp: i32, sp: i32) -> Result<i32> {
    let Some(bt) = BufferType::from_raw(t) else {
        return Ok(st(Status::BadArgument));
    };
    let start = start as u32 as usize;
    let max = max as u32 as usize;
    let slice = with_buffer(c.data_mut(), bt, |data| -> Result<Vec<u8>> {
        if start > data.len() {
            bail!("proxy_get_buffer_bytes({bt:?}) start {start} past the end of a {}-byte buffer", data.len());
        }
        let n = max.min(data.len() - start);
        Ok(data.get(start..start + n).context("buffer slice")?.to_vec())
    })?;
    let Some(slice) = slice.transpose()? else {
        return Ok(st(Status::NotFound));
    };
    if slice.is_empty() {
        // Envoy writes nothing back: the SDK sees a null pointer.
        return Ok(OK);
    }
    mem!(copy_out(c, &slice, pp, sp));
    Ok(OK)
}

fn proxy_get_buffer_status(c: &mut C<'_>, t: i32, len_ptr: i32, flags_ptr: i32) -> Result<i32> {
    let Some(bt) = BufferType::from_raw(t) else {
        return Ok(st(Status::BadArgument));
    };
    let Some(len) = with_buffer(c.data_mut(), bt, <[u8]>::len)? else {
        return Ok(st(Status::NotFound));
    };
    let len = u32::try_from(len)?;
    mem!(write(c, len_ptr, &len.to_le_bytes()));
    mem!(write(c, flags_ptr, &0u32.to_le_bytes()));
    Ok(OK)
}

/// Envoy's `Buffer::copyFrom` on a body: prepend/replace at 0, append at or past the end.
fn splice(body: &mut Vec<u8>, start: usize, size: usize, value: &[u8]) -> Status {
    if start == 0 {
        let drain = size.min(body.len());
        if drain == body.len() {
            // The whole body replaced (a rewritten request): one copy.
            body.clear();
            body.extend_from_slice(value);
        } else {
            body.splice(..drain, value.iter().copied());
        }
        Status::Ok
    } else if start >= body.len() {
        body.extend_from_slice(value);
        Status::Ok
    } else {
        Status::BadArgument
    }
}

fn proxy_set_buffer_bytes(c: &mut C<'_>, t: i32, start: i32, size: i32, ptr: i32, len: i32) -> Result<i32> {
    let Some(bt) = BufferType::from_raw(t) else {
        return Ok(st(Status::BadArgument));
    };
    let value = mem!(read(c, ptr, len));
    let (start, size) = (start as u32 as usize, size as u32 as usize);
    let s = c.data_mut();
    match bt {
        BufferType::HttpRequestBody | BufferType::HttpResponseBody => {
            let request = bt == BufferType::HttpRequestBody;
            let body = s.stream().and_then(|st| if request { st.req_body.as_mut() } else { st.resp_body.as_mut() });
            let Some(body) = body else {
                bail!("proxy_set_buffer_bytes({bt:?}) outside a body callback: Envoy's answer is not modelled");
            };
            Ok(st(splice(body, start, size, &value)))
        }
        BufferType::HttpCallResponseBody | BufferType::VmConfiguration | BufferType::PluginConfiguration => {
            if with_buffer(s, bt, |_| ())?.is_none() {
                return Ok(st(Status::NotFound));
            }
            // Envoy holds these as immutable buffers.
            Ok(st(Status::BadArgument))
        }
        other => bail!("buffer {other:?} is not modelled by the harness"),
    }
}

// ---- header maps ----

fn grpc_map(mt: MapType) -> Result<()> {
    if matches!(mt, MapType::GrpcReceiveInitialMetadata | MapType::GrpcReceiveTrailingMetadata) {
        bail!("gRPC metadata map {mt:?} is not modelled by the harness");
    }
    Ok(())
}

/// The map Envoy's `getConstMap` returns, or `None` for its null pointer.
fn const_map(s: &mut VmState, mt: MapType) -> Result<Option<HeaderMap>> {
    grpc_map(mt)?;
    match mt {
        MapType::HttpCallResponseHeaders => return Ok(s.call_response.as_ref().map(|r| r.headers.clone())),
        MapType::HttpCallResponseTrailers => return Ok(s.call_response.as_ref().map(|r| r.trailers.clone())),
        _ => {}
    }
    let Some(stream) = s.stream() else {
        return Ok(None);
    };
    if stream.in_log_phase {
        return Ok(match mt {
            MapType::RequestHeaders => stream.log_req_headers.clone(),
            MapType::ResponseHeaders => stream.log_resp_headers.clone(),
            MapType::ResponseTrailers => stream.log_resp_trailers.clone(),
            _ => None,
        });
    }
    Ok(match mt {
        MapType::RequestHeaders => stream.req_headers.readable().cloned(),
        MapType::RequestTrailers => {
            stream.req_trailers.readable().cloned().or_else(|| stream.added_req_trailers.clone())
        }
        MapType::ResponseHeaders => stream.resp_headers.readable().cloned(),
        MapType::ResponseTrailers => {
            stream.resp_trailers.readable().cloned().or_else(|| stream.added_resp_trailers.clone())
        }
        _ => None,
    })
}

/// Applies `f` to the map Envoy's `getMap` returns; `BadArgument` when it is null.
fn mutate(s: &mut VmState, mt: MapType, f: impl FnOnce(&mut HeaderMap)) -> Result<Status> {
    grpc_map(mt)?;
    let Some(stream) = s.stream() else {
        return Ok(Status::BadArgument);
    };
    let (access, added, body_eos) = match mt {
        MapType::RequestHeaders => (&mut stream.req_headers, None, false),
        MapType::ResponseHeaders => (&mut stream.resp_headers, None, false),
        MapType::RequestTrailers => (
            &mut stream.req_trailers,
            Some(&mut stream.added_req_trailers),
            stream.req_body.is_some() && stream.req_body_eos,
        ),
        MapType::ResponseTrailers => (
            &mut stream.resp_trailers,
            Some(&mut stream.added_resp_trailers),
            stream.resp_body.is_some() && stream.resp_body_eos,
        ),
        _ => return Ok(Status::BadArgument),
    };
    match access {
        MapAccess::Live(map) => f(map),
        MapAccess::Sent(_) => bail!(
            "{mt:?} changed after they were sent on: Envoy accepts the call but the change never \
             reaches the peer"
        ),
        MapAccess::Unavailable => match added {
            // Envoy lets the last body callback add trailers when there were none.
            Some(slot) if body_eos => f(slot.get_or_insert_with(HeaderMap::default)),
            _ => return Ok(Status::BadArgument),
        },
    }
    if mt == MapType::RequestHeaders {
        stream.route_cache_clears += 1;
    }
    Ok(Status::Ok)
}

fn map_type(t: i32) -> Option<MapType> {
    MapType::from_raw(t)
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn proxy_get_header_map_pairs(c: &mut C<'_>, t: i32, pp: i32, sp: i32) -> Result<i32> {
    let Some(mt) = map_type(t) else { return Ok(st(Status::BadArgument)) };
    let map = const_map(c.data_mut(), mt)?.unwrap_or_default();
    let bytes = if map.is_empty() { Vec::new() } else { abi::serialize_pairs(&map.0)? };
    mem!(copy_out(c, &bytes, pp, sp));
    Ok(OK)
}

fn proxy_set_header_map_pairs(c: &mut C<'_>, t: i32, ptr: i32, len: i32) -> Result<i32> {
    let Some(mt) = map_type(t) else { return Ok(st(Status::BadArgument)) };
    let raw = mem!(read(c, ptr, len));
    let pairs = abi::deserialize_pairs(&raw)?;
    // A new map: the old entries are not copied first even when a snapshot shares them.
    let status =
        mutate(c.data_mut(), mt, |m| *m = HeaderMap::from_owned(pairs.into_iter().map(|(k, v)| (text(k), text(v)))))?;
    Ok(st(status))
}

fn proxy_get_header_map_size(c: &mut C<'_>, t: i32, ret: i32) -> Result<i32> {
    let Some(mt) = map_type(t) else { return Ok(st(Status::BadArgument)) };
    let mut size = None;
    let status = mutate(c.data_mut(), mt, |m| size = Some(m.byte_size()))?;
    // `mutate` counts a route-cache clear for request headers; a size query is no mutation.
    if mt == MapType::RequestHeaders && status == Status::Ok {
        if let Some(s) = c.data_mut().stream() {
            s.route_cache_clears = s.route_cache_clears.saturating_sub(1);
        }
    }
    let Some(size) = size else { return Ok(st(status)) };
    mem!(write(c, ret, &u32::try_from(size)?.to_le_bytes()));
    Ok(OK)
}

fn proxy_get_header_map_value(c: &mut C<'_>, t: i32, kp: i32, kl: i32, pp: i32, sp: i32) -> Result<i32> {
    let Some(mt) = map_type(t) else { return Ok(st(Status::BadArgument)) };
    let key = text(mem!(read(c, kp, kl)));
    let in_log = c.data_mut().stream().is_some_and(|s| s.in_log_phase);
    let Some(map) = const_map(c.data_mut(), mt)? else {
        return Ok(st(if in_log { Status::NotFound } else { Status::BadArgument }));
    };
    let Some(value) = map.get(&key).map(str::to_owned) else {
        return Ok(st(Status::NotFound));
    };
    mem!(copy_out(c, value.as_bytes(), pp, sp));
    Ok(OK)
}

fn proxy_replace_header_map_value(c: &mut C<'_>, t: i32, kp: i32, kl: i32, vp: i32, vl: i32) -> Result<i32> {
    let Some(mt) = map_type(t) else { return Ok(st(Status::BadArgument)) };
    let key = text(mem!(read(c, kp, kl)));
    let value = text(mem!(read(c, vp, vl)));
    Ok(st(mutate(c.data_mut(), mt, |m| m.replace_owned(key, value))?))
}

fn proxy_add_header_map_value(c: &mut C<'_>, t: i32, kp: i32, kl: i32, vp: i32, vl: i32) -> Result<i32> {
    let Some(mt) = map_type(t) else { return Ok(st(Status::BadArgument)) };
    let key = text(mem!(read(c, kp, kl)));
    let value = text(mem!(read(c, vp, vl)));
    Ok(st(mutate(c.data_mut(), mt, |m| m.add_owned(key, value))?))
}

fn proxy_remove_header_map_value(c: &mut C<'_>, t: i32, kp: i32, kl: i32) -> Result<i32> {
    let Some(mt) = map_type(t) else { return Ok(st(Status::BadArgument)) };
    let key = text(mem!(read(c, kp, kl)));
    Ok(st(mutate(c.data_mut(), mt, |m| m.remove(&key))?))
}

// ---- properties ----

fn proxy_get_property(c: &mut C<'_>, pp: i32, pl: i32, rp: i32, rs: i32) -> Result<i32> {
    let path = mem!(read(c, pp, pl));
    match properties::get(c.data_mut(), &path)? {
        Ok(value) => {
            mem!(copy_out(c, &value, rp, rs));
            Ok(OK)
        }
        Err(status) => Ok(st(status)),
    }
}

fn proxy_set_property(c: &mut C<'_>, pp: i32, pl: i32, vp: i32, vl: i32) -> Result<i32> {
    let path = mem!(read(c, pp, pl));
    let value = mem!(read(c, vp, vl));
    // Envoy stores it as filter state `wasm.<path>` on the stream; a root context has no stream.
    let Some(stream) = c.data_mut().stream() else {
        return Ok(st(Status::NotFound));
    };
    stream.filter_state.insert(path, value);
    Ok(OK)
}

// ---- shared data and queues ----

fn proxy_get_shared_data(c: &mut C<'_>, kp: i32, kl: i32, pp: i32, sp: i32, cp: i32) -> Result<i32> {
    let key = text(mem!(read(c, kp, kl)));
    let vm_id = c.data().config.vm_id.clone();
    match c.data().shared.get(&vm_id, &key)? {
        Ok((value, cas)) => {
            mem!(copy_out(c, &value, pp, sp));
            mem!(write(c, cp, &cas.to_le_bytes()));
            Ok(OK)
        }
        Err(status) => Ok(st(status)),
    }
}

fn proxy_set_shared_data(c: &mut C<'_>, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32) -> Result<i32> {
    let key = text(mem!(read(c, kp, kl)));
    let value = mem!(read(c, vp, vl));
    let vm_id = c.data().config.vm_id.clone();
    Ok(st(c.data().shared.set(&vm_id, &key, &value, cas as u32)?))
}

fn proxy_register_shared_queue(c: &mut C<'_>, np: i32, nl: i32, ret: i32) -> Result<i32> {
    let name = text(mem!(read(c, np, nl)));
    let s = c.data();
    let id = s.shared.register_queue(&s.config.vm_id, &name, (s.worker, s.root_context_id))?;
    mem!(write(c, ret, &id.to_le_bytes()));
    Ok(OK)
}

fn proxy_resolve_shared_queue(c: &mut C<'_>, vp: i32, vl: i32, np: i32, nl: i32, ret: i32) -> Result<i32> {
    let vm_id = text(mem!(read(c, vp, vl)));
    let name = text(mem!(read(c, np, nl)));
    let Some(id) = c.data().shared.resolve_queue(&vm_id, &name)? else {
        return Ok(st(Status::NotFound));
    };
    mem!(write(c, ret, &id.to_le_bytes()));
    Ok(OK)
}

fn proxy_enqueue_shared_queue(c: &mut C<'_>, id: i32, vp: i32, vl: i32) -> Result<i32> {
    let value = mem!(read(c, vp, vl));
    Ok(st(c.data().shared.enqueue(id as u32, &value)?))
}

fn proxy_dequeue_shared_queue(c: &mut C<'_>, id: i32, pp: i32, sp: i32) -> Result<i32> {
    match c.data().shared.dequeue(id as u32)? {
        Ok(value) => {
            mem!(copy_out(c, &value, pp, sp));
            Ok(OK)
        }
        Err(status) => Ok(st(status)),
    }
}

// ---- HTTP calls and stream control ----

fn string_pairs(raw: &[u8]) -> Result<Vec<(String, String)>> {
    Ok(abi::deserialize_pairs(raw)?.into_iter().map(|(k, v)| (text(k).to_ascii_lowercase(), text(v))).collect())
}

#[allow(clippy::too_many_arguments)]
fn proxy_http_call(
    c: &mut C<'_>,
    up: i32,
    ul: i32,
    hp: i32,
    hl: i32,
    bp: i32,
    bl: i32,
    tp: i32,
    tl: i32,
    timeout: i32,
    ret: i32,
) -> Result<i32> {
    let cluster = text(mem!(read(c, up, ul)));
    let headers = string_pairs(&mem!(read(c, hp, hl)))?;
    let body = mem!(read(c, bp, bl));
    let trailers = string_pairs(&mem!(read(c, tp, tl)))?;
    mem!(write(c, ret, &0u32.to_le_bytes()));
    let s = c.data_mut();
    if timeout < 0 {
        return Ok(st(Status::BadArgument));
    }
    if let Some(known) = &s.config.clusters {
        if !known.contains(&cluster) {
            return Ok(st(Status::BadArgument));
        }
    }
    let has = |name: &str| headers.iter().any(|(k, _)| k == name);
    if !has(":path") || !has(":method") || !has(":authority") {
        return Ok(st(Status::BadArgument));
    }
    s.next_http_token = s.next_http_token.wrapping_add(1).max(1);
    let token = s.next_http_token;
    let call = HttpCallRequest {
        worker: s.worker,
        token,
        context_id: s.context_id(),
        cluster,
        headers,
        body,
        trailers,
        timeout_ms: timeout as u32,
    };
    s.pending_http_calls.push(call);
    mem!(write(c, ret, &token.to_le_bytes()));
    Ok(OK)
}

#[allow(clippy::too_many_arguments)]
fn proxy_send_local_response(
    c: &mut C<'_>,
    code: i32,
    dp: i32,
    dl: i32,
    bp: i32,
    bl: i32,
    hp: i32,
    hl: i32,
    grpc: i32,
) -> Result<i32> {
    let details = text(mem!(read(c, dp, dl)));
    let body = mem!(read(c, bp, bl));
    let headers = string_pairs(&mem!(read(c, hp, hl)))?;
    // A root context has no decoder callbacks: Envoy accepts the call and does nothing.
    let Some(stream) = c.data_mut().stream() else {
        return Ok(OK);
    };
    if stream.actions.local_reply.is_some() {
        bail!("a second proxy_send_local_response in the same callback: Envoy's outcome is not modelled");
    }
    stream.actions.local_reply =
        Some(LocalReplySpec { status: code as u32, details, body, headers, grpc_status: grpc });
    Ok(OK)
}

fn continue_stream(s: &mut VmState, t: StreamType) -> Result<Status> {
    match t {
        StreamType::HttpRequest => {
            if let Some(stream) = s.stream() {
                stream.actions.continue_request = true;
                // Envoy drops its request header pointer at once: later writes answer BadArgument.
                if let MapAccess::Live(m) = std::mem::take(&mut stream.req_headers) {
                    stream.continued_req_headers = Some(m);
                }
            }
            Ok(Status::Ok)
        }
        StreamType::HttpResponse => {
            if let Some(stream) = s.stream() {
                stream.actions.continue_response = true;
            }
            Ok(Status::Ok)
        }
        StreamType::Downstream => Ok(Status::Ok),
        StreamType::Upstream => Ok(Status::Unimplemented),
    }
}

fn proxy_continue_stream(c: &mut C<'_>, t: i32) -> Result<i32> {
    let Some(t) = StreamType::from_raw(t) else { return Ok(st(Status::BadArgument)) };
    Ok(st(continue_stream(c.data_mut(), t)?))
}

fn proxy_continue_request(c: &mut C<'_>) -> Result<i32> {
    Ok(st(continue_stream(c.data_mut(), StreamType::HttpRequest)?))
}

fn proxy_continue_response(c: &mut C<'_>) -> Result<i32> {
    Ok(st(continue_stream(c.data_mut(), StreamType::HttpResponse)?))
}

fn proxy_close_stream(c: &mut C<'_>, t: i32) -> Result<i32> {
    let Some(t) = StreamType::from_raw(t) else { return Ok(st(Status::BadArgument)) };
    if matches!(t, StreamType::HttpRequest | StreamType::HttpResponse) {
        if let Some(stream) = c.data_mut().stream() {
            stream.actions.reset = Some("wasm_close_stream".to_owned());
        }
    }
    Ok(OK)
}

fn proxy_clear_route_cache(c: &mut C<'_>) -> Result<i32> {
    let s = c.data_mut();
    match s.stream() {
        Some(stream) => stream.route_cache_clears += 1,
        None => s.route_cache_clears_root += 1,
    }
    Ok(OK)
}

fn proxy_get_status(c: &mut C<'_>, cp: i32, pp: i32, sp: i32) -> Result<i32> {
    let (code, msg) = c.data().call_status.clone();
    mem!(write(c, cp, &code.to_le_bytes()));
    mem!(copy_out(c, msg.as_bytes(), pp, sp));
    Ok(OK)
}

// ---- metrics ----

fn proxy_define_metric(c: &mut C<'_>, t: i32, np: i32, nl: i32, ret: i32) -> Result<i32> {
    let Some(kind) = MetricKind::from_raw(t) else { return Ok(st(Status::BadArgument)) };
    let name = text(mem!(read(c, np, nl)));
    let s = c.data_mut();
    let slot = s.shared.define_metric(kind, &name)?;
    s.next_metric_seq = s.next_metric_seq.checked_add(1).context("metric ids exhausted")?;
    let id = (s.next_metric_seq << 2) | kind.tag();
    s.metric_ids.insert(id, (kind, name, slot));
    mem!(write(c, ret, &id.to_le_bytes()));
    Ok(OK)
}

/// The name and stats-store slot of metric `id`, when it was defined as `kind`.
fn metric(s: &VmState, id: u32, kind: MetricKind) -> Option<(&str, usize)> {
    s.metric_ids.get(&id).filter(|(k, _, _)| *k == kind).map(|(_, name, slot)| (name.as_str(), *slot))
}

fn kind_of(id: u32) -> Option<MetricKind> {
    match id & 3 {
        0 => Some(MetricKind::Counter),
        1 => Some(MetricKind::Gauge),
        2 => Some(MetricKind::Histogram),
        _ => None,
    }
}

fn proxy_increment_metric(c: &mut C<'_>, id: i32, offset: i64) -> Result<i32> {
    let id = id as u32;
    let s = c.data();
    let kind = kind_of(id);
    let Some(kind @ (MetricKind::Counter | MetricKind::Gauge)) = kind else {
        return Ok(st(Status::BadArgument));
    };
    let Some((name, slot)) = metric(s, id, kind) else { return Ok(st(Status::NotFound)) };
    if kind == MetricKind::Counter && offset <= 0 {
        return Ok(st(Status::BadArgument));
    }
    s.shared.update_metric(slot, |v| {
        match v {
            MetricValue::Counter(n) => *n = n.saturating_add(offset.unsigned_abs()),
            MetricValue::Gauge(n) => {
                *n = if offset > 0 {
                    n.saturating_add(offset.unsigned_abs())
                } else {
                    n.checked_sub(offset.unsigned_abs())
                        .ok_or_else(|| anyhow!("gauge {name:?} decremented below zero (Envoy would wrap or assert)"))?
                }
            }
            MetricValue::Histogram(_) => bail!("metric {name:?} is a histogram"),
        }
        Ok(())
    })?;
    Ok(OK)
}

fn proxy_record_metric(c: &mut C<'_>, id: i32, value: i64) -> Result<i32> {
    let id = id as u32;
    let value = value as u64;
    let s = c.data();
    let Some(kind) = kind_of(id) else { return Ok(st(Status::NotFound)) };
    let Some((_, slot)) = metric(s, id, kind) else { return Ok(st(Status::NotFound)) };
    s.shared.update_metric(slot, |v| {
        v.record(value);
        Ok(())
    })?;
    Ok(OK)
}

fn proxy_get_metric(c: &mut C<'_>, id: i32, ret: i32) -> Result<i32> {
    let id = id as u32;
    let s = c.data();
    let Some(kind @ (MetricKind::Counter | MetricKind::Gauge)) = kind_of(id) else {
        return Ok(st(Status::BadArgument));
    };
    let Some((name, slot)) = metric(s, id, kind) else { return Ok(st(Status::NotFound)) };
    let value = s.shared.update_metric(slot, |v| match v {
        MetricValue::Counter(n) | MetricValue::Gauge(n) => Ok(*n),
        MetricValue::Histogram(_) => bail!("metric {name:?} is a histogram"),
    })?;
    mem!(write(c, ret, &value.to_le_bytes()));
    Ok(OK)
}

// ---- context lifecycle ----

fn proxy_done(c: &mut C<'_>) -> Result<i32> {
    let s = c.data_mut();
    let id = s.current_context;
    match s.streams.get_mut(&id) {
        Some(stream) if stream.pending_done && !stream.done_called => {
            stream.done_called = true;
            Ok(OK)
        }
        _ => Ok(st(Status::NotFound)),
    }
}

fn proxy_set_effective_context(c: &mut C<'_>, id: i32) -> Result<i32> {
    let id = id as u32;
    let s = c.data_mut();
    if id == s.root_context_id || s.streams.contains_key(&id) {
        s.effective_context = Some(id);
        Ok(OK)
    } else {
        Ok(st(Status::BadArgument))
    }
}

// ---- WASI ----

const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOSYS: i32 = 52;
const ENOTSUP: i32 = 58;

macro_rules! fault {
    ($e:expr) => {
        match $e? {
            Ok(v) => v,
            Err(_) => return Ok(EFAULT),
        }
    };
}

fn fd_write(c: &mut C<'_>, fd: i32, iovs: i32, n: i32, ret: i32) -> Result<i32> {
    let level = match fd {
        1 => LogLevel::Info,
        2 => LogLevel::Error,
        _ => return Ok(EBADF),
    };
    let mut out = Vec::new();
    for i in 0..n.max(0) {
        let iov = fault!(read(c, iovs.wrapping_add(i.wrapping_mul(8)), 8));
        let word = |at: usize| -> Result<i32> {
            let b: [u8; 4] = iov.get(at..at + 4).context("iovec")?.try_into()?;
            Ok(i32::from_le_bytes(b))
        };
        let (buf, len) = (word(0)?, word(4)?);
        if len != 0 {
            out.extend(fault!(read(c, buf, len)));
        }
    }
    let written = u32::try_from(out.len())?;
    if out.last() == Some(&b'\n') {
        out.pop();
    }
    if !out.is_empty() {
        c.data().log(level, text(out))?;
    }
    fault!(write(c, ret, &written.to_le_bytes()));
    Ok(0)
}

fn fd_read(_c: &mut C<'_>, _fd: i32, _iovs: i32, _n: i32, _ret: i32) -> Result<i32> {
    Ok(ENOSYS)
}

fn fd_fdstat_get(c: &mut C<'_>, fd: i32, ret: i32) -> Result<i32> {
    if fd != 1 && fd != 2 {
        return Ok(EBADF);
    }
    let mut stat = [0u8; 24];
    if let Some(rights) = stat.get_mut(8..16) {
        rights.copy_from_slice(&64u64.to_le_bytes()); // FD_WRITE, as Envoy answers
    }
    fault!(write(c, ret, &stat));
    Ok(0)
}

fn fd_prestat_get(_c: &mut C<'_>, _fd: i32, _ret: i32) -> Result<i32> {
    Ok(EBADF)
}

fn fd_prestat_dir_name(_c: &mut C<'_>, _fd: i32, _p: i32, _n: i32) -> Result<i32> {
    Ok(ENOSYS)
}

fn environ_sizes_get(c: &mut C<'_>, count: i32, size: i32) -> Result<i32> {
    let env = c.data().config.env.clone();
    let total: usize = env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    fault!(write(c, count, &u32::try_from(env.len())?.to_le_bytes()));
    fault!(write(c, size, &u32::try_from(total)?.to_le_bytes()));
    Ok(0)
}

fn environ_get(c: &mut C<'_>, array: i32, buf: i32) -> Result<i32> {
    let env = c.data().config.env.clone();
    let (mut slot, mut at) = (array, buf);
    for (k, v) in env {
        fault!(write(c, slot, &(at as u32).to_le_bytes()));
        let entry = format!("{k}={v}\0");
        fault!(write(c, at, entry.as_bytes()));
        at = at.wrapping_add(i32::try_from(entry.len())?);
        slot = slot.wrapping_add(4);
    }
    Ok(0)
}

fn args_sizes_get(c: &mut C<'_>, argc: i32, size: i32) -> Result<i32> {
    fault!(write(c, argc, &0u32.to_le_bytes()));
    fault!(write(c, size, &0u32.to_le_bytes()));
    Ok(0)
}

fn args_get(_c: &mut C<'_>, _argv: i32, _buf: i32) -> Result<i32> {
    Ok(0)
}

fn clock_time_get(c: &mut C<'_>, id: i32, _precision: i64, ret: i32) -> Result<i32> {
    let now = c.data().now()?;
    let value = match id {
        0 => now.unix_nanos,
        1 => now.monotonic_nanos,
        _ => return Ok(ENOTSUP),
    };
    fault!(write(c, ret, &value.to_le_bytes()));
    Ok(0)
}

fn random_get(c: &mut C<'_>, buf: i32, len: i32) -> Result<i32> {
    let len = len as u32 as usize;
    if len > 64 * 1024 {
        return Ok(EINVAL);
    }
    // Deterministic per host, so a test run can be repeated exactly.
    let mut bytes = vec![0u8; len];
    let s = c.data_mut();
    for b in &mut bytes {
        s.rng ^= s.rng << 13;
        s.rng ^= s.rng >> 7;
        s.rng ^= s.rng << 17;
        *b = (s.rng >> 24) as u8;
    }
    fault!(write(c, buf, &bytes));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_follows_envoy_copy_from() {
        let mut b = b"hello".to_vec();
        assert_eq!(splice(&mut b, 0, 5, b"bye"), Status::Ok);
        assert_eq!(b, b"bye");
        assert_eq!(splice(&mut b, 0, 0, b">"), Status::Ok);
        assert_eq!(b, b">bye");
        assert_eq!(splice(&mut b, 99, 0, b"<"), Status::Ok);
        assert_eq!(b, b">bye<");
        assert_eq!(splice(&mut b, 2, 1, b"x"), Status::BadArgument);
        assert_eq!(splice(&mut b, 0, 1000, b"all"), Status::Ok);
        assert_eq!(b, b"all");
    }
}
