//! [`Stream`]: one HTTP request/response through the filter, driven step by step by the test, and
//! the state-based views of its outcome: [`UpstreamRequest`] (what the upstream received) and
//! [`ClientResponse`] (what the client received).
//!
//! The test plays the client and the upstream server. Each call feeds one or more frames and runs
//! every callback they cause, including answers to HTTP calls the filter dispatched; it returns
//! what has reached the other side so far. Nothing is asserted for the test: a paused request shows
//! up as an incomplete [`UpstreamRequest`], a local reply as [`UpstreamRequest::answered`].

use std::cell::RefCell;
use std::rc::Rc;

use anyhow::{anyhow, bail, Context as _, Result};

use super::flow::{Dir, Event, HeaderPhase};
use super::host::HostInner;
use super::vm::HeaderMap;

fn pairs(map: &HeaderMap) -> Vec<(String, String)> {
    map.0.to_vec()
}

/// A whole body as frames: one, or none when it is empty (headers only).
fn one_frame<'b, 'a>(body: &'b &'a [u8]) -> &'b [&'a [u8]] {
    if body.is_empty() {
        &[]
    } else {
        std::slice::from_ref(body)
    }
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let name = name.to_ascii_lowercase();
    headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
}

/// What the upstream has received so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamRequest {
    /// Request headers as forwarded; `None` while the filter holds them (or never let them go).
    pub headers: Option<Vec<(String, String)>>,
    /// Body bytes forwarded, concatenated.
    pub body: Vec<u8>,
    /// Body bytes forwarded, frame by frame.
    pub chunks: Vec<Vec<u8>>,
    pub trailers: Option<Vec<(String, String)>>,
    /// The whole request (through end of stream) reached the upstream.
    pub complete: bool,
    /// The filter changed request headers (ABI 0.2.1: Envoy clears the route cache and routes
    /// again after the filter continues).
    pub route_cache_cleared: bool,
    /// How many header changes cleared the route cache.
    pub route_cache_clears: u32,
    /// The client was answered before or instead of the upstream (local reply or reset).
    pub answered: Option<ClientResponse>,
}

impl UpstreamRequest {
    /// First value of a forwarded header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.as_deref().and_then(|h| find(h, name))
    }
    /// True when the headers reached the upstream.
    pub fn forwarded(&self) -> bool {
        self.headers.is_some()
    }
    /// The body as UTF-8 (lossy).
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).context("upstream body is not JSON")
    }
    /// Neither forwarded completely nor answered: the filter still holds the request.
    pub fn held(&self) -> bool {
        !self.complete && self.answered.is_none()
    }
    /// False when a forwarded `content-length` disagrees with the forwarded body.
    pub fn content_length_consistent(&self) -> bool {
        match self.header("content-length").map(str::parse::<usize>) {
            Some(Ok(n)) => !self.complete || n == self.body.len(),
            Some(Err(_)) => false,
            None => true,
        }
    }
}

/// A local reply, as Envoy records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    /// Response code details (e.g. `request_payload_too_large`).
    pub details: String,
}

/// What the client has received so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientResponse {
    /// `:status` of the headers the client received.
    pub status: Option<u16>,
    /// Headers as received, `:status` included; empty until they are sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Body frames as the client received them.
    pub chunks: Vec<Vec<u8>>,
    pub trailers: Option<Vec<(String, String)>>,
    /// The response reached end of stream.
    pub complete: bool,
    /// The stream was reset (the client sees a broken response).
    pub reset: bool,
    /// Why it was reset.
    pub reset_reason: Option<String>,
    /// Set when the answer is a local reply rather than the upstream's.
    pub local_reply: Option<LocalReply>,
}

impl ClientResponse {
    /// First value of a received header.
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }
    /// The body as UTF-8 (lossy).
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).context("client body is not JSON")
    }
}

/// One HTTP stream on one worker of a [`Host`](super::Host).
pub struct Stream {
    inner: Rc<RefCell<HostInner>>,
    worker: usize,
    id: u32,
}

fn request_map(headers: &[(&str, &str)]) -> HeaderMap {
    HeaderMap::from_pairs(headers)
}

impl Drop for Stream {
    /// A finished stream's record goes with its handle, so a long run of streams (a benchmark, a
    /// soak) keeps a constant footprint. A stream whose context is still alive is kept until the
    /// module deletes it.
    fn drop(&mut self) {
        let key = self.key();
        if let Ok(mut inner) = self.inner.try_borrow_mut() {
            inner.orphan(key);
        }
    }
}

impl Stream {
    pub(crate) fn new(inner: Rc<RefCell<HostInner>>, worker: usize, id: u32) -> Self {
        Self { inner, worker, id }
    }

    /// The stream's context id inside the VM.
    pub fn context_id(&self) -> u32 {
        self.id
    }

    /// The worker (VM index) the stream runs on.
    pub fn worker(&self) -> usize {
        self.worker
    }

    fn key(&self) -> (usize, u32) {
        (self.worker, self.id)
    }

    fn with<T>(&self, f: impl FnOnce(&mut HostInner) -> Result<T>) -> Result<T> {
        let mut inner = self
            .inner
            .try_borrow_mut()
            .map_err(|_| anyhow!("the host is busy (stream used from inside an HTTP call responder?)"))?;
        f(&mut inner)
    }

    fn feed(&self, dir: Dir, event: Event) -> Result<()> {
        let key = self.key();
        self.with(|inner| {
            let f = inner.flow(key)?;
            let d = f.dir(dir);
            let what = match dir {
                Dir::Request => "request",
                Dir::Response => "response",
            };
            if dir == Dir::Response && matches!(event, Event::Headers(..)) {
                if let Some((status, details)) = &f.local_reply {
                    bail!("the stream was already answered with a local reply ({status}, {details})");
                }
                if let Some(reason) = &f.reset {
                    bail!("the stream was already reset ({reason})");
                }
            }
            match &event {
                Event::Headers(..) if d.started => bail!("{what} headers were already sent"),
                Event::Data(..) | Event::Trailers(..) if !d.started => bail!("{what} data before {what} headers"),
                _ if d.input_end => bail!("the {what} already ended"),
                _ => {}
            }
            if dir == Dir::Response && !f.resp.started {
                if f.finished || f.request_aborted {
                    bail!("the stream was already answered or reset; there is no upstream response to send");
                }
                if f.req.out_headers.is_none() {
                    bail!("the request has not reached the upstream (the filter holds it), so no response can come");
                }
            }
            inner.feed(key, dir, event)
        })
    }

    /// Sends the whole request: headers, then `body` as one frame (headers only if empty).
    pub fn request(&mut self, headers: &[(&str, &str)], body: &[u8]) -> Result<UpstreamRequest> {
        self.request_chunks(headers, one_frame(&body))
    }

    /// Sends headers, then each chunk as a frame, the last with end of stream.
    pub fn request_chunks(&mut self, headers: &[(&str, &str)], chunks: &[&[u8]]) -> Result<UpstreamRequest> {
        self.feed_request(headers, chunks)?;
        self.upstream()
    }

    /// The request's headers, then each chunk as a frame, the last with end of stream.
    fn feed_request(&mut self, headers: &[(&str, &str)], chunks: &[&[u8]]) -> Result<()> {
        self.feed(Dir::Request, Event::Headers(request_map(headers), chunks.is_empty()))?;
        for (i, c) in chunks.iter().enumerate() {
            self.feed(Dir::Request, Event::Data(c.to_vec(), i + 1 == chunks.len()))?;
        }
        Ok(())
    }

    /// Sends headers and the whole body like [`Stream::request`], without building the
    /// [`UpstreamRequest`] view (copies of the forwarded headers and body for a test to read): for
    /// benchmarks, which measure the filter and the host, not the view. True when the whole request
    /// reached the upstream.
    pub fn push_request(&mut self, headers: &[(&str, &str)], body: &[u8]) -> Result<bool> {
        self.feed_request(headers, one_frame(&body))?;
        self.reached(Dir::Request)
    }

    /// The upstream answers like [`Stream::respond_stream`], without building the
    /// [`ClientResponse`] view. True when the whole answer reached the client.
    pub fn push_response(&mut self, status: u16, headers: &[(&str, &str)], chunks: &[&[u8]]) -> Result<bool> {
        self.feed_response(status, headers, chunks)?;
        self.reached(Dir::Response)
    }

    /// The upstream's headers, then each chunk as a frame, the last with end of stream.
    fn feed_response(&mut self, status: u16, headers: &[(&str, &str)], chunks: &[&[u8]]) -> Result<()> {
        self.feed_response_headers(status, headers, chunks.is_empty())?;
        for (i, c) in chunks.iter().enumerate() {
            self.feed(Dir::Response, Event::Data(c.to_vec(), i + 1 == chunks.len()))?;
        }
        Ok(())
    }

    /// Whether the whole of `dir` (headers through end of stream) has been sent on.
    fn reached(&self, dir: Dir) -> Result<bool> {
        let key = self.key();
        self.with(|inner| {
            let d = inner.flow(key)?.dir(dir);
            Ok(d.out_headers.is_some() && d.out_end)
        })
    }

    /// Sends headers, chunks and trailers (the trailers end the request).
    pub fn request_with_trailers(
        &mut self,
        headers: &[(&str, &str)],
        chunks: &[&[u8]],
        trailers: &[(&str, &str)],
    ) -> Result<UpstreamRequest> {
        self.send_request_headers(headers, false)?;
        for c in chunks {
            self.send_request_data(c, false)?;
        }
        self.send_request_trailers(trailers)
    }

    /// Sends the request headers frame.
    pub fn send_request_headers(&mut self, headers: &[(&str, &str)], end_of_stream: bool) -> Result<UpstreamRequest> {
        self.feed(Dir::Request, Event::Headers(request_map(headers), end_of_stream))?;
        self.upstream()
    }

    /// Sends one request body frame.
    pub fn send_request_data(&mut self, chunk: &[u8], end_of_stream: bool) -> Result<UpstreamRequest> {
        self.feed(Dir::Request, Event::Data(chunk.to_vec(), end_of_stream))?;
        self.upstream()
    }

    /// Sends the request trailers (ends the request).
    pub fn send_request_trailers(&mut self, trailers: &[(&str, &str)]) -> Result<UpstreamRequest> {
        self.feed(Dir::Request, Event::Trailers(request_map(trailers)))?;
        self.upstream()
    }

    /// The upstream answers with one body frame (headers only if empty).
    pub fn respond(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> Result<ClientResponse> {
        self.respond_stream(status, headers, one_frame(&body))
    }

    /// The upstream answers with headers and then each chunk as a frame (e.g. SSE events).
    pub fn respond_stream(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        chunks: &[&[u8]],
    ) -> Result<ClientResponse> {
        self.feed_response(status, headers, chunks)?;
        self.client()
    }

    /// The upstream answers with headers, chunks and trailers.
    pub fn respond_with_trailers(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        chunks: &[&[u8]],
        trailers: &[(&str, &str)],
    ) -> Result<ClientResponse> {
        self.send_response_headers(status, headers, false)?;
        for c in chunks {
            self.send_response_data(c, false)?;
        }
        self.send_response_trailers(trailers)
    }

    /// The upstream sends its response headers.
    pub fn send_response_headers(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Result<ClientResponse> {
        self.feed_response_headers(status, headers, end_of_stream)?;
        self.client()
    }

    fn feed_response_headers(&mut self, status: u16, headers: &[(&str, &str)], end_of_stream: bool) -> Result<()> {
        let mut map = HeaderMap::default();
        map.add(":status", &status.to_string());
        for (k, v) in headers {
            map.add(k, v);
        }
        let key = self.key();
        self.with(|inner| {
            let addr = inner.flow(key)?.upstream_address.clone();
            if let Ok(st) = inner.stream_state(key) {
                st.upstream_address = Some(addr);
                st.response_code = Some(u32::from(status));
            }
            Ok(())
        })?;
        self.feed(Dir::Response, Event::Headers(map, end_of_stream))
    }

    /// The upstream sends one response body frame.
    pub fn send_response_data(&mut self, chunk: &[u8], end_of_stream: bool) -> Result<ClientResponse> {
        self.feed(Dir::Response, Event::Data(chunk.to_vec(), end_of_stream))?;
        self.client()
    }

    /// The upstream sends its trailers (ends the response).
    pub fn send_response_trailers(&mut self, trailers: &[(&str, &str)]) -> Result<ClientResponse> {
        self.feed(Dir::Response, Event::Trailers(request_map(trailers)))?;
        self.client()
    }

    /// What the upstream has received so far.
    pub fn upstream(&self) -> Result<UpstreamRequest> {
        let key = self.key();
        let answered = {
            let inner = self.inner.try_borrow().map_err(|_| anyhow!("the host is busy"))?;
            let f = inner.flows.get(&key).context("unknown stream")?;
            f.request_aborted || f.reset.is_some()
        };
        let answered = if answered { Some(self.client()?) } else { None };
        self.with(|inner| {
            let clears = match inner.stream_state(key) {
                Ok(st) => Some(st.route_cache_clears),
                Err(_) => None,
            };
            let f = inner.flow(key)?;
            let clears = clears.unwrap_or(f.route_cache_clears);
            let d = &f.req;
            Ok(UpstreamRequest {
                headers: d.out_headers.as_ref().map(pairs),
                body: d.out_chunks.concat(),
                chunks: d.out_chunks.clone(),
                trailers: d.out_trailers.as_ref().map(pairs),
                complete: d.out_end,
                route_cache_cleared: clears > 0,
                route_cache_clears: clears,
                answered,
            })
        })
    }

    /// What the client has received so far.
    pub fn client(&self) -> Result<ClientResponse> {
        let key = self.key();
        self.with(|inner| {
            let f = inner.flow(key)?;
            let d = &f.resp;
            let headers = d.out_headers.as_ref().map(pairs).unwrap_or_default();
            Ok(ClientResponse {
                status: find(&headers, ":status").and_then(|s| s.parse().ok()),
                body: d.out_chunks.concat(),
                chunks: d.out_chunks.clone(),
                trailers: d.out_trailers.as_ref().map(pairs),
                complete: d.out_end && f.reset.is_none(),
                reset: f.reset.is_some(),
                reset_reason: f.reset.clone(),
                local_reply: f
                    .local_reply
                    .as_ref()
                    .map(|(status, details)| LocalReply { status: *status, details: details.clone() }),
                headers,
            })
        })
    }

    /// True when the filter still holds response headers (paused in `proxy_on_response_headers`).
    pub fn response_headers_held(&self) -> Result<bool> {
        let key = self.key();
        self.with(|inner| {
            let p = inner.flow(key)?.resp.headers;
            Ok(matches!(p, HeaderPhase::Stopped | HeaderPhase::StoppedAll))
        })
    }

    /// Filter state the module wrote with `proxy_set_property` (Envoy's `wasm.<name>`; read it in
    /// the access log as `%FILTER_STATE(wasm.<name>:PLAIN)%`).
    pub fn filter_state(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let key = self.key();
        self.with(|inner| {
            if let Ok(st) = inner.stream_state(key) {
                return Ok(st.filter_state.get(name.as_bytes()).cloned());
            }
            Ok(inner.flow(key)?.filter_state.get(name.as_bytes()).cloned())
        })
    }

    /// A value for a property path the harness does not model, for this stream only.
    pub fn set_property(&self, path: &[&str], value: impl Into<Vec<u8>>) -> Result<()> {
        let key = self.key();
        let value = value.into();
        self.with(|inner| {
            inner.stream_state(key)?.properties.insert(path.iter().map(|s| (*s).to_owned()).collect(), value);
            Ok(())
        })
    }

    /// The `upstream.address` this stream reports once its response started.
    pub fn set_upstream_address(&self, addr: &str) -> Result<()> {
        let key = self.key();
        self.with(|inner| {
            inner.flow(key)?.upstream_address = addr.to_owned();
            Ok(())
        })
    }

    /// True once the stream ended (response complete, local reply done, or reset).
    pub fn finished(&self) -> Result<bool> {
        let key = self.key();
        self.with(|inner| Ok(inner.flow(key)?.finished))
    }
}
