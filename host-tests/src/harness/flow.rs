//! How Envoy's HTTP filter manager drives one stream through the filter, per direction: which
//! callback comes next, what `Continue` and `Pause` mean in each, what is buffered and what is
//! forwarded, and what a local reply or a reset does. The test feeds events; this module decides
//! what reaches the upstream and the client.
//!
//! The rules, as in Envoy 1.40 with proxy-wasm-cpp-host:
//! - headers: `Continue` forwards them and drops the filter's handle on them (later writes answer
//!   `BadArgument`); `Pause` stops iteration. With `allow_on_headers_stop_iteration` body callbacks
//!   still arrive; without it Envoy stops *all* iteration and buffers the body until the filter
//!   resumes, then hands it over in one callback.
//! - body: `Pause` is `StopIterationAndBuffer`: the chunk is kept and the next callback sees the
//!   whole buffered body; past the buffer limit the request is answered 413 (the response 500, or
//!   reset once its headers left). `Continue` forwards headers (if held) and the buffered body.
//!   When a frame joins a paused buffer and takes it past the limit, Envoy prepares its 413 first
//!   and still runs the body callback with the whole buffer; whatever the filter asks for in that
//!   callback (a local reply of its own, continuing) is dropped. A single frame may itself exceed
//!   the limit (Envoy stops reading a connection only once the limit is reached): the filter sees
//!   it, and the 413 follows only if the filter buffers it. (Seen in Envoy 1.40's debug log:
//!   "request data too large watermark exceeded", "Preparing local reply ... request_payload_too_large",
//!   then the filter's callback, then "Executing sending local reply"; the response direction is
//!   taken to work the same way.)
//! - `proxy_continue_stream` resumes after the callback returns; `proxy_send_local_response` sends
//!   the reply through the filter's own response callbacks when no response has started, directly
//!   when a response started but its headers were not sent, and resets the stream otherwise.
//! - when the response ends (or the stream resets) Envoy calls `proxy_on_log`, `proxy_on_done` and
//!   `proxy_on_delete`.

use std::collections::{BTreeMap, VecDeque};

use anyhow::{anyhow, Result};

use super::host::{HostInner, ROOT_CONTEXT_ID};
use super::vm::{Actions, HeaderMap, LocalReplySpec, MapAccess, StreamState};

/// Direction of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Request,
    Response,
}

/// An input frame from the test (downstream client or upstream server).
#[derive(Debug, Clone)]
pub enum Event {
    Headers(HeaderMap, bool),
    Data(Vec<u8>, bool),
    Trailers(HeaderMap),
}

/// Where the filter left the headers of one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeaderPhase {
    #[default]
    NotYet,
    /// `Pause` with `allow_on_headers_stop_iteration`: body callbacks continue.
    Stopped,
    /// `Pause` without it: nothing reaches the filter until it resumes.
    StoppedAll,
    Forwarded,
}

/// One direction's progress.
#[derive(Debug, Default)]
pub struct DirFlow {
    pub queue: VecDeque<Event>,
    /// The test has sent this direction's headers.
    pub started: bool,
    /// The test has sent this direction's last frame.
    pub input_end: bool,
    pub headers: HeaderPhase,
    pub headers_eos: bool,
    pub buffering: bool,
    pub buffer: Vec<u8>,
    pub data_eos: bool,
    pub trailers_paused: bool,
    pub out_headers: Option<HeaderMap>,
    pub out_chunks: Vec<Vec<u8>>,
    pub out_trailers: Option<HeaderMap>,
    pub out_end: bool,
}

/// One stream's progress in both directions.
#[derive(Debug, Default)]
pub struct Flow {
    pub req: DirFlow,
    pub resp: DirFlow,
    pub created: bool,
    pub local_reply: Option<(u32, String)>,
    pub reset: Option<String>,
    pub request_aborted: bool,
    pub finished: bool,
    pub deleted: bool,
    /// The test dropped its [`Stream`](super::Stream) handle: the flow is forgotten once its
    /// context is deleted.
    pub orphaned: bool,
    pub upstream_address: String,
    /// Copied from the stream context when it is deleted.
    pub route_cache_clears: u32,
    pub filter_state: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Flow {
    pub fn new(upstream_address: String) -> Self {
        Self { upstream_address, ..Default::default() }
    }

    pub fn dir(&self, dir: Dir) -> &DirFlow {
        match dir {
            Dir::Request => &self.req,
            Dir::Response => &self.resp,
        }
    }

    pub fn dir_mut(&mut self, dir: Dir) -> &mut DirFlow {
        match dir {
            Dir::Request => &mut self.req,
            Dir::Response => &mut self.resp,
        }
    }
}

type Key = (usize, u32);

#[derive(Clone, Copy)]
enum Cb {
    Headers,
    Body,
    Trailers,
}

fn continues(acts: &Actions, dir: Dir) -> bool {
    match dir {
        Dir::Request => acts.continue_request,
        Dir::Response => acts.continue_response,
    }
}

impl HostInner {
    pub fn flow(&mut self, key: Key) -> Result<&mut Flow> {
        self.flows.get_mut(&key).ok_or_else(|| anyhow!("stream {key:?} is unknown"))
    }

    fn df(&mut self, key: Key, dir: Dir) -> Result<&mut DirFlow> {
        Ok(self.flow(key)?.dir_mut(dir))
    }

    pub fn stream_state(&mut self, key: Key) -> Result<&mut StreamState> {
        self.vm(key.0)?
            .store
            .data_mut()
            .streams
            .get_mut(&key.1)
            .ok_or_else(|| anyhow!("stream context {} on worker {} was deleted", key.1, key.0))
    }

    /// Feeds one event from the test and runs everything it causes.
    pub fn feed(&mut self, key: Key, dir: Dir, event: Event) -> Result<()> {
        if !self.flow(key)?.created {
            self.flow(key)?.created = true;
            let vm = self.vm(key.0)?;
            if let Some(f) = vm.exports.on_context_create.clone() {
                vm.call(key.1, "proxy_on_context_create", |s| f.call(s, (key.1 as i32, ROOT_CONTEXT_ID as i32)))?;
            }
        }
        let d = self.df(key, dir)?;
        match &event {
            Event::Headers(_, eos) => {
                d.started = true;
                d.input_end = *eos;
            }
            Event::Data(_, eos) => d.input_end = *eos,
            Event::Trailers(_) => d.input_end = true,
        }
        d.queue.push_back(event);
        self.pump(key, dir)?;
        self.apply_pending(key.0)?;
        self.settle()
    }

    fn pump(&mut self, key: Key, dir: Dir) -> Result<()> {
        loop {
            let f = self.flow(key)?;
            if f.finished || (dir == Dir::Request && f.request_aborted) {
                f.dir_mut(dir).queue.clear();
                return Ok(());
            }
            let d = f.dir_mut(dir);
            if d.headers == HeaderPhase::StoppedAll || d.trailers_paused {
                return Ok(());
            }
            let Some(event) = d.queue.pop_front() else {
                return Ok(());
            };
            match event {
                Event::Headers(map, eos) => self.on_headers(key, dir, map, eos)?,
                Event::Data(bytes, eos) => self.on_data(key, dir, bytes, eos)?,
                Event::Trailers(map) => self.on_trailers(key, dir, map)?,
            }
        }
    }

    fn call_cb(&mut self, key: Key, dir: Dir, cb: Cb, n: usize, eos: bool) -> Result<i32> {
        let (w, id) = key;
        let n = i32::try_from(n)?;
        let vm = self.vm(w)?;
        let e = &vm.exports;
        let (three, two, name) = match (dir, cb) {
            (Dir::Request, Cb::Headers) => (e.on_request_headers.clone(), None, "proxy_on_request_headers"),
            (Dir::Request, Cb::Body) => (e.on_request_body.clone(), None, "proxy_on_request_body"),
            (Dir::Request, Cb::Trailers) => (None, e.on_request_trailers.clone(), "proxy_on_request_trailers"),
            (Dir::Response, Cb::Headers) => (e.on_response_headers.clone(), None, "proxy_on_response_headers"),
            (Dir::Response, Cb::Body) => (e.on_response_body.clone(), None, "proxy_on_response_body"),
            (Dir::Response, Cb::Trailers) => (None, e.on_response_trailers.clone(), "proxy_on_response_trailers"),
        };
        if let Some(f) = three {
            return vm.call(id, name, |s| f.call(s, (id as i32, n, i32::from(eos))));
        }
        if let Some(f) = two {
            return vm.call(id, name, |s| f.call(s, (id as i32, n)));
        }
        Ok(0)
    }

    fn take_actions(&mut self, key: Key) -> Result<Actions> {
        Ok(std::mem::take(&mut self.stream_state(key)?.actions))
    }

    /// Handles a reset or local reply; true when the stream took that turn.
    fn terminal(&mut self, key: Key, acts: &Actions) -> Result<bool> {
        if self.flow(key)?.finished {
            return Ok(acts.reset.is_some() || acts.local_reply.is_some());
        }
        if let Some(reason) = &acts.reset {
            self.reset_stream(key, reason)?;
            return Ok(true);
        }
        if let Some(spec) = acts.local_reply.clone() {
            self.local_reply(key, spec)?;
            return Ok(true);
        }
        Ok(false)
    }

    fn other_continue(&mut self, key: Key, dir: Dir, acts: &Actions) -> Result<()> {
        match dir {
            Dir::Request if acts.continue_response => self.resume(key, Dir::Response),
            Dir::Response if acts.continue_request => self.resume(key, Dir::Request),
            _ => Ok(()),
        }
    }

    fn on_headers(&mut self, key: Key, dir: Dir, map: HeaderMap, eos: bool) -> Result<()> {
        let n = map.len();
        let st = self.stream_state(key)?;
        // No access-log copy yet: the log reads this map as the filters leave it (`finish`), and a
        // second holder would make the filter's first change copy every entry.
        match dir {
            Dir::Request => st.req_headers = MapAccess::Live(map),
            Dir::Response => st.resp_headers = MapAccess::Live(map),
        }
        self.df(key, dir)?.headers_eos = eos;
        let action = self.call_cb(key, dir, Cb::Headers, n, eos)?;
        let acts = self.take_actions(key)?;
        if self.terminal(key, &acts)? {
            return Ok(());
        }
        if action == 0 || continues(&acts, dir) {
            self.forward_headers(key, dir, action == 0 && !continues(&acts, dir))?;
        } else {
            let allow = self.config.allow_on_headers_stop_iteration;
            self.df(key, dir)?.headers = if allow { HeaderPhase::Stopped } else { HeaderPhase::StoppedAll };
        }
        self.other_continue(key, dir, &acts)
    }

    fn forward_headers(&mut self, key: Key, dir: Dir, returned_continue: bool) -> Result<()> {
        let st = self.stream_state(key)?;
        let map = match dir {
            Dir::Request => match st.continued_req_headers.take() {
                Some(m) => {
                    st.req_headers = MapAccess::Unavailable;
                    m
                }
                None => {
                    let m = st.req_headers.readable().cloned().unwrap_or_default();
                    st.req_headers =
                        if returned_continue { MapAccess::Unavailable } else { MapAccess::Sent(m.clone()) };
                    m
                }
            },
            Dir::Response => {
                let m = st.resp_headers.readable().cloned().unwrap_or_default();
                st.resp_headers = if returned_continue { MapAccess::Unavailable } else { MapAccess::Sent(m.clone()) };
                m
            }
        };
        match dir {
            Dir::Request => st.log_req_headers = Some(map.clone()),
            Dir::Response => st.log_resp_headers = Some(map.clone()),
        }
        let d = self.df(key, dir)?;
        d.headers = HeaderPhase::Forwarded;
        d.out_headers = Some(map);
        if d.headers_eos {
            d.out_end = true;
            if dir == Dir::Response {
                self.finish(key)?;
            }
        }
        Ok(())
    }

    fn on_data(&mut self, key: Key, dir: Dir, bytes: Vec<u8>, eos: bool) -> Result<()> {
        let limit = self.config.buffer_limit;
        let d = self.df(key, dir)?;
        // Envoy decides its 413 when a frame joins a buffer past the limit, yet still runs this
        // callback with the whole buffer; the reply goes out after it, and what the filter asks for
        // meanwhile (its own local reply, continuing) comes too late.
        let overflowed = if d.buffering {
            d.buffer.extend_from_slice(&bytes);
            d.buffer.len() > limit
        } else {
            d.buffer = bytes;
            false
        };
        if eos {
            d.data_eos = true;
        }
        // The filter sees Envoy's buffer itself: what it changes stays changed (it is put back below).
        let visible = std::mem::take(&mut d.buffer);
        let len = visible.len();
        let st = self.stream_state(key)?;
        match dir {
            Dir::Request => {
                st.req_body = Some(visible);
                st.req_body_eos = eos;
            }
            Dir::Response => {
                st.resp_body = Some(visible);
                st.resp_body_eos = eos;
            }
        }
        let action = self.call_cb(key, dir, Cb::Body, len, eos)?;
        let st = self.stream_state(key)?;
        let body = match dir {
            Dir::Request => {
                st.req_body_eos = false;
                st.req_body.take()
            }
            Dir::Response => {
                st.resp_body_eos = false;
                st.resp_body.take()
            }
        }
        .unwrap_or_default();
        self.df(key, dir)?.buffer = body;
        let acts = self.take_actions(key)?;
        if overflowed {
            return self.overflow(key, dir);
        }
        if self.terminal(key, &acts)? {
            return Ok(());
        }
        if action == 0 || continues(&acts, dir) {
            if self.df(key, dir)?.headers != HeaderPhase::Forwarded {
                self.forward_headers(key, dir, false)?;
            }
            let d = self.df(key, dir)?;
            d.buffering = false;
            let body = std::mem::take(&mut d.buffer);
            self.emit_data(key, dir, body, eos)?;
        } else {
            let d = self.df(key, dir)?;
            d.buffering = true;
            if d.buffer.len() > limit {
                return self.overflow(key, dir);
            }
        }
        self.other_continue(key, dir, &acts)
    }

    fn emit_data(&mut self, key: Key, dir: Dir, body: Vec<u8>, eos: bool) -> Result<()> {
        let added_trailers = if eos {
            let st = self.stream_state(key)?;
            match dir {
                Dir::Request => st.added_req_trailers.take(),
                Dir::Response => st.added_resp_trailers.take(),
            }
        } else {
            None
        };
        let d = self.df(key, dir)?;
        if !body.is_empty() {
            d.out_chunks.push(body);
        }
        if let Some(t) = added_trailers {
            d.out_trailers = Some(t);
        }
        if eos {
            d.out_end = true;
            if dir == Dir::Response {
                self.finish(key)?;
            }
        }
        Ok(())
    }

    fn on_trailers(&mut self, key: Key, dir: Dir, map: HeaderMap) -> Result<()> {
        let n = map.len();
        let st = self.stream_state(key)?;
        match dir {
            Dir::Request => st.req_trailers = MapAccess::Live(map),
            Dir::Response => st.resp_trailers = MapAccess::Live(map),
        }
        let action = self.call_cb(key, dir, Cb::Trailers, n, true)?;
        let acts = self.take_actions(key)?;
        if self.terminal(key, &acts)? {
            return Ok(());
        }
        if action == 0 || continues(&acts, dir) {
            self.forward_trailers(key, dir)?;
        } else {
            self.df(key, dir)?.trailers_paused = true;
        }
        self.other_continue(key, dir, &acts)
    }

    fn forward_trailers(&mut self, key: Key, dir: Dir) -> Result<()> {
        if self.df(key, dir)?.headers != HeaderPhase::Forwarded {
            self.forward_headers(key, dir, false)?;
        }
        if self.df(key, dir)?.buffering {
            self.flush(key, dir)?;
        }
        let st = self.stream_state(key)?;
        let access = match dir {
            Dir::Request => &mut st.req_trailers,
            Dir::Response => &mut st.resp_trailers,
        };
        let map = std::mem::take(access).readable().cloned().unwrap_or_default();
        if dir == Dir::Response {
            st.log_resp_trailers = Some(map.clone());
        }
        let d = self.df(key, dir)?;
        d.trailers_paused = false;
        d.out_trailers = Some(map);
        d.out_end = true;
        if dir == Dir::Response {
            self.finish(key)?;
        }
        Ok(())
    }

    fn flush(&mut self, key: Key, dir: Dir) -> Result<()> {
        let d = self.df(key, dir)?;
        d.buffering = false;
        let body = std::mem::take(&mut d.buffer);
        let eos = d.data_eos;
        self.emit_data(key, dir, body, eos)
    }

    /// `proxy_continue_stream` for one direction, after the callback that asked for it.
    pub fn resume(&mut self, key: Key, dir: Dir) -> Result<()> {
        if self.flow(key)?.finished {
            return Ok(());
        }
        match self.df(key, dir)?.headers {
            HeaderPhase::NotYet => return Ok(()),
            HeaderPhase::StoppedAll => {
                self.forward_headers(key, dir, false)?;
                // Envoy hands the body it buffered meanwhile to this filter in one callback.
                let d = self.df(key, dir)?;
                let (mut chunk, mut eos, mut any) = (Vec::new(), false, false);
                while matches!(d.queue.front(), Some(Event::Data(..))) {
                    if let Some(Event::Data(b, e)) = d.queue.pop_front() {
                        chunk.extend(b);
                        eos = e;
                        any = true;
                    }
                }
                if any {
                    self.on_data(key, dir, chunk, eos)?;
                }
            }
            phase => {
                if phase == HeaderPhase::Stopped {
                    self.forward_headers(key, dir, false)?;
                }
                if self.df(key, dir)?.buffering {
                    self.flush(key, dir)?;
                }
                if self.df(key, dir)?.trailers_paused {
                    self.forward_trailers(key, dir)?;
                }
            }
        }
        self.pump(key, dir)
    }

    fn overflow(&mut self, key: Key, dir: Dir) -> Result<()> {
        let spec = |status: u32, body: &str, details: &str| LocalReplySpec {
            status,
            details: details.to_owned(),
            body: body.as_bytes().to_vec(),
            headers: Vec::new(),
            grpc_status: -1,
        };
        match dir {
            Dir::Request => self.local_reply(key, spec(413, "Payload Too Large", "request_payload_too_large")),
            Dir::Response => self.local_reply(key, spec(500, "Internal Server Error", "response_payload_too_large")),
        }
    }

    /// Envoy's `DownstreamFilterManager::sendLocalReply`.
    pub fn local_reply(&mut self, key: Key, spec: LocalReplySpec) -> Result<()> {
        let f = self.flow(key)?;
        f.request_aborted = true;
        f.req.queue.clear();
        let started = f.resp.started;
        let sent = f.resp.out_headers.is_some();
        let mut map = HeaderMap::default();
        map.add(":status", &spec.status.to_string());
        for (k, v) in &spec.headers {
            map.add(k, v);
        }
        if spec.body.is_empty() {
            map.remove("content-length");
            map.remove("content-type");
        } else {
            map.replace("content-length", &spec.body.len().to_string());
            if map.get("content-type").is_none() {
                map.add("content-type", "text/plain");
            }
        }
        if sent {
            return self.reset_stream(key, "local reply after response headers were sent");
        }
        self.flow(key)?.local_reply = Some((spec.status, spec.details.clone()));
        let st = self.stream_state(key)?;
        st.response_code = Some(spec.status);
        st.response_code_details = Some(spec.details.clone());
        if !started {
            // Through the filter chain: this filter's response callbacks see the reply.
            let f = self.flow(key)?;
            f.resp.started = true;
            f.resp.input_end = true;
            let body_empty = spec.body.is_empty();
            f.resp.queue.push_back(Event::Headers(map, body_empty));
            if !body_empty {
                f.resp.queue.push_back(Event::Data(spec.body, true));
            }
            return self.pump(key, Dir::Response);
        }
        // A response started but its headers were not sent: straight to the client.
        let st = self.stream_state(key)?;
        st.resp_headers = MapAccess::Unavailable;
        st.resp_trailers = MapAccess::Unavailable;
        st.log_resp_headers = Some(map.clone());
        let f = self.flow(key)?;
        f.resp.queue.clear();
        f.resp.out_headers = Some(map);
        f.resp.out_chunks = if spec.body.is_empty() { Vec::new() } else { vec![spec.body] };
        f.resp.out_end = true;
        self.finish(key)
    }

    fn reset_stream(&mut self, key: Key, reason: &str) -> Result<()> {
        let f = self.flow(key)?;
        f.reset = Some(reason.to_owned());
        self.finish(key)
    }

    /// End of stream: access log, then done and delete.
    fn finish(&mut self, key: Key) -> Result<()> {
        let f = self.flow(key)?;
        if f.finished {
            return Ok(());
        }
        f.finished = true;
        f.req.queue.clear();
        f.resp.queue.clear();
        let (w, id) = key;
        let st = self.stream_state(key)?;
        st.in_log_phase = true;
        // Maps still held (never forwarded) are logged as the filters left them.
        if let Some(m) = st.req_headers.readable().or(st.continued_req_headers.as_ref()) {
            st.log_req_headers = Some(m.clone());
        }
        if let Some(m) = st.resp_headers.readable() {
            st.log_resp_headers = Some(m.clone());
        }
        if let Some(m) = st.resp_trailers.readable() {
            st.log_resp_trailers = Some(m.clone());
        }
        st.req_headers = MapAccess::Unavailable;
        st.resp_headers = MapAccess::Unavailable;
        st.req_trailers = MapAccess::Unavailable;
        st.resp_trailers = MapAccess::Unavailable;
        st.req_body = None;
        st.resp_body = None;
        let vm = self.vm(w)?;
        if let Some(f) = vm.exports.on_log.clone() {
            vm.call(id, "proxy_on_log", |s| f.call(s, id as i32))?;
        }
        let done = match vm.exports.on_done.clone() {
            Some(f) => vm.call(id, "proxy_on_done", |s| f.call(s, id as i32))?,
            None => 1,
        };
        let st = self.stream_state(key)?;
        st.in_log_phase = false;
        st.actions = Actions::default();
        if done != 0 {
            self.delete_context(key)
        } else {
            st.pending_done = true;
            Ok(())
        }
    }

    fn delete_context(&mut self, key: Key) -> Result<()> {
        let (w, id) = key;
        let vm = self.vm(w)?;
        if let Some(f) = vm.exports.on_delete.clone() {
            vm.call(id, "proxy_on_delete", |s| f.call(s, id as i32))?;
        }
        let st = self.vm(w)?.store.data_mut().streams.remove(&id);
        let f = self.flow(key)?;
        f.deleted = true;
        if let Some(st) = st {
            f.route_cache_clears = st.route_cache_clears;
            f.filter_state = st.filter_state;
        }
        Ok(())
    }

    /// The test dropped the handle of stream `key`: its record goes now if the module has deleted
    /// the context, or once it does (in [`Self::apply_pending`], the only way a stream nobody
    /// holds can still end).
    pub fn orphan(&mut self, key: Key) {
        match self.flows.get_mut(&key) {
            Some(f) if f.deleted => {
                self.flows.remove(&key);
            }
            Some(f) => f.orphaned = true,
            None => {}
        }
    }

    /// Applies what callbacks asked for on any stream of worker `w` (after an HTTP call answer,
    /// a tick or a queue notification, or through `proxy_set_effective_context`).
    pub fn apply_pending(&mut self, w: usize) -> Result<()> {
        let ids: Vec<u32> = self
            .vm(w)?
            .store
            .data()
            .streams
            .iter()
            .filter(|(_, s)| !s.actions.is_empty() || (s.pending_done && s.done_called))
            .map(|(id, _)| *id)
            .collect();
        for &id in &ids {
            let key = (w, id);
            if !self.flows.contains_key(&key) {
                continue;
            }
            let st = self.stream_state(key)?;
            if st.pending_done && st.done_called {
                self.delete_context(key)?;
                continue;
            }
            let acts = self.take_actions(key)?;
            if self.terminal(key, &acts)? {
                continue;
            }
            if acts.continue_request {
                self.resume(key, Dir::Request)?;
            }
            if acts.continue_response {
                self.resume(key, Dir::Response)?;
            }
        }
        for id in ids {
            if self.flows.get(&(w, id)).is_some_and(|f| f.orphaned && f.deleted) {
                self.flows.remove(&(w, id));
            }
        }
        Ok(())
    }
}
