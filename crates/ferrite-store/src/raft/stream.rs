//! Long-lived framed streams between members.
//!
//! An HTTP request per raft message costs both ends a request to build,
//! route, parse and answer, and the caller a trip through the HTTP
//! client's connection pool: at a few thousand messages a second that was
//! a third of a forwarded write's time. As etcd's rafthttp keeps a stream
//! to each peer, a member keeps one connection to each peer it calls,
//! upgraded from the peer port (`POST /raft/stream` with
//! `Upgrade: ferrite-raft/1`), and sends its calls on it as frames. Each
//! call carries an id its reply repeats, so several can be outstanding at
//! once (a vote while an append waits for a follower's fsync) and the
//! callee answers them in any order.
//!
//! Frames (big-endian; `len` counts the bytes after itself):
//!
//! ```text
//! call   len:u32 | id:u64 | kind:u8   | body
//! reply  len:u32 | id:u64 | status:u8 | body
//! ```
//!
//! A call's body is its request in the kind's [`Encoding`]. A reply's
//! status is [`ANSWERED`] with the encoded answer, or [`REFUSED`] with a
//! UTF-8 reason the callee could not serve the call (say, an undecodable
//! request).
//!
//! Snapshots and membership changes stay single HTTP requests: they are
//! rare, and a snapshot's megabytes on a stream would hold up the
//! heartbeats behind it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::oneshot;

use super::network::{Encoding, PeerCallError};
use super::types::NodeId;

/// The protocol named in the `Upgrade` header.
pub const PROTOCOL: &str = "ferrite-raft/1";

/// The peer API's route that upgrades to a stream.
pub const ROUTE: &str = "/raft/stream";

/// A reply's status: the body is the encoded answer.
pub const ANSWERED: u8 = 0;
/// A reply's status: the body says why the call was not served.
pub const REFUSED: u8 = 1;

/// Length, id and kind or status.
const HEADER: usize = 4 + 8 + 1;

/// How long a stream may stay silent while calls wait on it before the
/// next call dials again. A peer that answers nothing at all for this long
/// may be gone without a word (its machine lost, a connection state
/// dropped on the way), and TCP alone would notice only after minutes.
/// A slow answer is not silence: any frame from the peer resets it. etcd
/// gives its streams the same 5 s (`ConnReadTimeout`).
const SILENCE_LIMIT: Duration = Duration::from_secs(5);

/// The largest frame either end accepts: the log's own record size limit,
/// as for the peer API's HTTP bodies.
const MAX_FRAME: usize = 1 << 30;

/// What a call asks of the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Raft's AppendEntries.
    Append,
    /// Raft's RequestVote.
    Vote,
    /// Writes a follower forwards to the leader.
    Propose,
    /// A read index, for a follower's linearizable read.
    ReadIndex,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Append, Kind::Vote, Kind::Propose, Kind::ReadIndex];

    fn tag(self) -> u8 {
        match self {
            Kind::Append => 1,
            Kind::Vote => 2,
            Kind::Propose => 3,
            Kind::ReadIndex => 4,
        }
    }

    pub fn from_tag(tag: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.tag() == tag)
    }

    /// Raft's own messages travel as postcard; forwarded client work as
    /// JSON, whose etcd shapes omit empty fields (see [`Encoding`]).
    pub fn encoding(self) -> Encoding {
        match self {
            Kind::Append | Kind::Vote => Encoding::Postcard,
            Kind::Propose | Kind::ReadIndex => Encoding::Json,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Append => "append",
            Kind::Vote => "vote",
            Kind::Propose => "propose",
            Kind::ReadIndex => "read-index",
        }
    }
}

/// One frame as read: its id, its kind or status, and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub id: u64,
    pub tag: u8,
    pub body: Bytes,
}

/// Builds a frame, letting `body` append the body in place.
pub fn frame(id: u64, tag: u8, body: impl FnOnce(&mut Vec<u8>) -> Result<(), String>) -> Result<Vec<u8>, String> {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&id.to_be_bytes());
    buf.push(tag);
    body(&mut buf)?;
    let len = buf.len() - 4;
    match u32::try_from(len) {
        Ok(n) if len <= MAX_FRAME => buf[..4].copy_from_slice(&n.to_be_bytes()),
        _ => return Err(format!("a frame of {len} bytes is over the limit of {MAX_FRAME}")),
    }
    Ok(buf)
}

/// The reply to call `id`: `answer` in `encoding`, or the reason it could
/// not be encoded.
pub fn reply<T: Serialize>(id: u64, encoding: Encoding, answer: &T) -> Vec<u8> {
    frame(id, ANSWERED, |buf| encoding.encode_into(buf, answer))
        .unwrap_or_else(|reason| refusal(id, &format!("cannot encode the answer: {reason}")))
}

/// The reply to call `id` that says why it was not served.
pub fn refusal(id: u64, reason: &str) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER + reason.len());
    buf.extend_from_slice(&u32::try_from(HEADER - 4 + reason.len()).unwrap_or(u32::MAX).to_be_bytes());
    buf.extend_from_slice(&id.to_be_bytes());
    buf.push(REFUSED);
    buf.extend_from_slice(reason.as_bytes());
    buf
}

/// Reads frames off a byte stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(io: R) -> FrameReader<R> {
        FrameReader { io, buf: BytesMut::with_capacity(64 * 1024) }
    }

    /// The next frame, or `None` at a clean end of the stream. Cancel-safe:
    /// what was read stays buffered for the next call.
    pub async fn next(&mut self) -> std::io::Result<Option<Frame>> {
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
                if !(HEADER - 4..=MAX_FRAME).contains(&len) {
                    let what =
                        format!("a frame header says {len} bytes (at least {} and at most {MAX_FRAME})", HEADER - 4);
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, what));
                }
                if self.buf.len() >= 4 + len {
                    let mut frame = self.buf.split_to(4 + len).freeze();
                    frame.advance(4);
                    let id = frame.get_u64();
                    let tag = frame.get_u8();
                    return Ok(Some(Frame { id, tag, body: frame }));
                }
                self.buf.reserve(4 + len - self.buf.len());
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let what = format!("the stream ended {} bytes into a frame", self.buf.len());
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, what));
            }
        }
    }
}

/// Answers a `POST` to [`ROUTE`]: once the connection is upgraded,
/// `serve_on` runs on it in a task of its own.
pub fn accept<F, Fut>(mut req: axum::extract::Request, serve_on: F) -> axum::response::Response
where
    F: FnOnce(TokioIo<hyper::upgrade::Upgraded>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    use axum::response::IntoResponse;
    use http::{header, HeaderValue, StatusCode};
    if req.headers().get(header::UPGRADE).and_then(|v| v.to_str().ok()) != Some(PROTOCOL) {
        return (StatusCode::BAD_REQUEST, format!("{ROUTE} needs `Upgrade: {PROTOCOL}`")).into_response();
    }
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => serve_on(TokioIo::new(io)).await,
            Err(e) => tracing::debug!(error = %e, "a peer's stream upgrade failed"),
        }
    });
    let mut resp = axum::response::Response::new(axum::body::Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    resp.headers_mut().insert(header::UPGRADE, HeaderValue::from_static(PROTOCOL));
    resp
}

/// Serves calls arriving on `io` until the caller hangs up, the stream
/// breaks, or `stop` resolves. Calls are answered as they finish, not in
/// order; all of them run in this one task, so a call costs no hand-off
/// to another thread on its way in or out.
pub async fn serve<IO, H, Fut>(io: IO, handle: H, stop: impl Future<Output = ()>)
where
    IO: AsyncRead + AsyncWrite,
    H: Fn(Frame) -> Fut,
    Fut: Future<Output = Vec<u8>>,
{
    let (rd, mut wr) = tokio::io::split(io);
    let mut frames = FrameReader::new(rd);
    let mut calls = FuturesUnordered::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            frame = frames.next() => match frame {
                Ok(Some(frame)) => calls.push(handle(frame)),
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "a peer's stream broke");
                    return;
                }
            },
            Some(mut out) = calls.next(), if !calls.is_empty() => {
                // Replies that are ready too go in the same write.
                while let Some(Some(more)) = calls.next().now_or_never() {
                    out.extend_from_slice(&more);
                }
                if let Err(e) = write(&mut wr, &out).await {
                    tracing::debug!(error = %e, "cannot answer on a peer's stream");
                    return;
                }
            }
        }
    }
}

async fn write<W: AsyncWrite + Unpin>(wr: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    wr.write_all(bytes).await?;
    wr.flush().await
}

/// The calling side: one stream per peer URL, dialled on first use and
/// again after it breaks. Cheap to clone; clones share the streams.
#[derive(Debug, Clone)]
pub struct Streams {
    http: reqwest::Client,
    links: Arc<Mutex<HashMap<String, Arc<Link>>>>,
    silence_limit: Duration,
}

/// The stream to one peer URL, if it is up.
#[derive(Debug)]
struct Link {
    url: String,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
}

type Upgraded = reqwest::Upgraded;

/// An open stream: the write half callers take turns on, and the calls
/// waiting for replies, which a reader task hands out.
#[derive(Debug)]
struct Conn {
    writer: tokio::sync::Mutex<WriteHalf<Upgraded>>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    reader: tokio::task::AbortHandle,
}

#[derive(Debug)]
struct Shared {
    /// When the stream was opened; `waiting_since` counts from here.
    opened: Instant,
    /// Microseconds after `opened` when the first call went out that no
    /// frame has followed yet; `u64::MAX` once the peer has said anything
    /// since.
    waiting_since: AtomicU64,
    calls: Mutex<Calls>,
}

/// Calls waiting for their replies, or why none can wait any more.
#[derive(Debug, Default)]
struct Calls {
    waiting: HashMap<u64, oneshot::Sender<Frame>>,
    broken: Option<String>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Shared {
    fn calls(&self) -> std::sync::MutexGuard<'_, Calls> {
        // The map stays consistent even if a holder panicked.
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn since_opened(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Marks the stream broken and fails every waiting call (their senders
    /// drop, and each reads the reason from `broken`).
    fn break_off(&self, reason: String) {
        let mut calls = self.calls();
        calls.broken.get_or_insert(reason);
        calls.waiting.clear();
    }

    fn broken(&self) -> Option<String> {
        self.calls().broken.clone()
    }

    /// Whether calls have waited on the peer for `limit` without a frame.
    fn silent_for(&self, limit: Duration) -> bool {
        let since = self.waiting_since.load(Ordering::Relaxed);
        since != u64::MAX && Duration::from_micros(self.since_opened().saturating_sub(since)) >= limit
    }
}

/// Hands each reply to the call waiting for it, until the stream ends.
async fn read_replies(shared: Arc<Shared>, mut frames: FrameReader<ReadHalf<Upgraded>>) {
    let reason = loop {
        match frames.next().await {
            Ok(Some(frame)) => {
                shared.waiting_since.store(u64::MAX, Ordering::Relaxed);
                // A call that gave up waiting is gone from the map.
                if let Some(waiting) = shared.calls().waiting.remove(&frame.id) {
                    let _ = waiting.send(frame);
                }
            }
            Ok(None) => break "the peer closed the stream".to_owned(),
            Err(e) => break format!("the stream broke: {e}"),
        }
    };
    shared.break_off(reason);
}

impl Streams {
    /// Dials with `http`, which must speak HTTP/1 (an upgrade needs it).
    pub fn new(http: reqwest::Client) -> Streams {
        Streams { http, links: Arc::default(), silence_limit: SILENCE_LIMIT }
    }

    /// Gives up streams silent for `limit` instead of [`SILENCE_LIMIT`].
    #[cfg(test)]
    fn silence_limit(mut self, limit: Duration) -> Streams {
        self.silence_limit = limit;
        self
    }

    fn link(&self, url: &str) -> Arc<Link> {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(link) = links.get(url) {
            return Arc::clone(link);
        }
        let link = Arc::new(Link { url: url.to_owned(), conn: tokio::sync::Mutex::new(None) });
        links.insert(url.to_owned(), Arc::clone(&link));
        link
    }

    /// Sends one call to member `to` at peer URL `url` and decodes its
    /// answer, giving up after `timeout`.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        to: NodeId,
        url: &str,
        kind: Kind,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerCallError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let link = self.link(url);
        let conn = match tokio::time::timeout_at(deadline, link.connect(&self.http, to, self.silence_limit)).await {
            Ok(conn) => conn?,
            Err(_) => return Err(PeerCallError::Timeout { to, url: url.to_owned(), kind: kind.name() }),
        };
        let id = conn.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = frame(id, kind.tag(), |buf| kind.encoding().encode_into(buf, req))
            .map_err(|reason| PeerCallError::Encode { to, reason })?;
        let (tx, rx) = oneshot::channel();
        {
            let mut calls = conn.shared.calls();
            if let Some(reason) = &calls.broken {
                return Err(PeerCallError::Stream { to, url: url.to_owned(), reason: reason.clone() });
            }
            calls.waiting.insert(id, tx);
        }
        let mut call = Call { conn: &conn, id, writing: false };
        conn.shared.waiting_since.fetch_min(conn.shared.since_opened(), Ordering::Relaxed);
        match tokio::time::timeout_at(deadline, call.send(&frame, rx)).await {
            Ok(Ok(reply)) => {
                call.done();
                decode_reply(to, url, kind, reply)
            }
            Ok(Err(reason)) => Err(PeerCallError::Stream { to, url: url.to_owned(), reason }),
            Err(_) => Err(PeerCallError::Timeout { to, url: url.to_owned(), kind: kind.name() }),
        }
    }
}

fn decode_reply<Resp: DeserializeOwned>(
    to: NodeId,
    url: &str,
    kind: Kind,
    reply: Frame,
) -> Result<Resp, PeerCallError> {
    match reply.tag {
        ANSWERED => kind.encoding().decode(&reply.body).map_err(|reason| PeerCallError::Decode {
            to,
            url: url.to_owned(),
            reason,
        }),
        _ => Err(PeerCallError::Refused {
            to,
            url: url.to_owned(),
            reason: String::from_utf8_lossy(&reply.body).into_owned(),
        }),
    }
}

/// One call on a stream, from writing its frame to reading its reply.
/// Dropped early (its caller gave up), it takes itself off the waiting
/// list; dropped in the middle of writing, it breaks the stream, whose
/// next frame would otherwise start inside this one.
struct Call<'a> {
    conn: &'a Conn,
    id: u64,
    writing: bool,
}

impl Call<'_> {
    async fn send(&mut self, frame: &[u8], rx: oneshot::Receiver<Frame>) -> Result<Frame, String> {
        {
            let mut writer = self.conn.writer.lock().await;
            self.writing = true;
            if let Err(e) = write(&mut *writer, frame).await {
                let reason = format!("cannot write to the stream: {e}");
                self.conn.shared.break_off(reason.clone());
                return Err(reason);
            }
            self.writing = false;
        }
        rx.await.map_err(|_| self.conn.shared.broken().unwrap_or_else(|| "the stream closed".to_owned()))
    }

    /// The reply arrived; nothing to clean up.
    fn done(mut self) {
        self.id = u64::MAX;
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if self.writing {
            self.conn.shared.break_off("a call was abandoned in the middle of its frame".to_owned());
        } else if self.id != u64::MAX {
            self.conn.shared.calls().waiting.remove(&self.id);
        }
    }
}

impl Link {
    /// The open stream, dialling one if there is none or it broke. One
    /// caller dials while the others wait for its stream.
    async fn connect(&self, http: &reqwest::Client, to: NodeId, silence: Duration) -> Result<Arc<Conn>, PeerCallError> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.take() {
            if conn.shared.silent_for(silence) {
                conn.shared.break_off(format!("no frame from the peer for {silence:?} while calls waited"));
            }
            if conn.shared.broken().is_none() {
                *slot = Some(Arc::clone(&conn));
                return Ok(conn);
            }
        }
        let url = format!("{}{ROUTE}", self.url);
        let resp = http
            .post(&url)
            .header(http::header::CONNECTION, "upgrade")
            .header(http::header::UPGRADE, PROTOCOL)
            .send()
            .await
            .map_err(PeerCallError::sending(to, &url))?;
        let status = resp.status();
        if status != http::StatusCode::SWITCHING_PROTOCOLS {
            let body = resp.text().await.unwrap_or_default();
            return Err(PeerCallError::Status { to, url, status: status.as_u16(), body });
        }
        let io = resp.upgrade().await.map_err(|source| PeerCallError::Transport { to, url: url.clone(), source })?;
        let (rd, wr) = tokio::io::split(io);
        let shared = Arc::new(Shared {
            opened: Instant::now(),
            waiting_since: AtomicU64::new(u64::MAX),
            calls: Mutex::default(),
        });
        let reader = tokio::spawn(read_replies(Arc::clone(&shared), FrameReader::new(rd))).abort_handle();
        let conn = Arc::new(Conn { writer: tokio::sync::Mutex::new(wr), shared, next_id: AtomicU64::new(0), reader });
        *slot = Some(Arc::clone(&conn));
        Ok(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_read_back_whole_however_the_bytes_arrive() {
        let a = frame(7, 3, |b| {
            b.extend_from_slice(b"hello");
            Ok(())
        })
        .unwrap();
        let b = refusal(8, "no such kind 9");
        let c = frame(9, ANSWERED, |_| Ok(())).unwrap();
        let all: Vec<u8> = [a, b, c].concat();
        // One byte at a time: every split point of every frame.
        let (mut tx, rx) = tokio::io::duplex(1);
        let writer = tokio::spawn(async move { tx.write_all(&all).await });
        let mut frames = FrameReader::new(rx);
        let mut got = Vec::new();
        while let Some(f) = frames.next().await.unwrap() {
            got.push(f);
        }
        writer.await.unwrap().unwrap();
        assert_eq!(
            got,
            vec![
                Frame { id: 7, tag: 3, body: Bytes::from_static(b"hello") },
                Frame { id: 8, tag: REFUSED, body: Bytes::from_static(b"no such kind 9") },
                Frame { id: 9, tag: ANSWERED, body: Bytes::new() },
            ]
        );
    }

    #[tokio::test]
    async fn a_truncated_or_oversized_frame_is_an_error_that_says_so() {
        let whole = frame(1, 1, |b| {
            b.extend_from_slice(&[0; 10]);
            Ok(())
        })
        .unwrap();
        let mut frames = FrameReader::new(&whole[..whole.len() - 3]);
        let e = frames.next().await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(e.to_string().contains("20 bytes into a frame"), "{e}");

        let huge = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let e = FrameReader::new(&huge[..]).next().await.unwrap_err();
        assert!(e.to_string().contains("4294967295 bytes"), "{e}");
    }

    /// A peer that serves streams: a call's request `(delay_ms, n)` is
    /// answered `n * 2` after `delay_ms`, or never if `n` is 0, or refused
    /// if `n` is 1. Counts the streams dialled; `hang_up` ends them all.
    struct Peer {
        url: String,
        dials: Arc<AtomicU64>,
        hang_up: Arc<tokio::sync::Notify>,
    }

    async fn peer() -> Peer {
        use axum::routing::post;
        let dials = Arc::new(AtomicU64::new(0));
        let hang_up = Arc::new(tokio::sync::Notify::new());
        let (d, h) = (Arc::clone(&dials), Arc::clone(&hang_up));
        let app = axum::Router::new().route(
            ROUTE,
            post(move |req: axum::extract::Request| {
                d.fetch_add(1, Ordering::SeqCst);
                let h = Arc::clone(&h);
                std::future::ready(accept(req, move |io| async move {
                    serve(io, answer, async move { h.notified().await }).await;
                }))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Peer { url, dials, hang_up }
    }

    async fn answer(frame: Frame) -> Vec<u8> {
        let (delay_ms, n): (u64, u64) = Kind::Propose.encoding().decode(&frame.body).unwrap();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        match n {
            0 => std::future::pending().await,
            1 => refusal(frame.id, "one is not served here"),
            n => reply(frame.id, Encoding::Json, &(n * 2)),
        }
    }

    async fn ask(streams: &Streams, url: &str, delay_ms: u64, n: u64, timeout_ms: u64) -> Result<u64, PeerCallError> {
        streams.call(2, url, Kind::Propose, &(delay_ms, n), Duration::from_millis(timeout_ms)).await
    }

    #[tokio::test]
    async fn concurrent_calls_share_one_stream_and_get_their_own_replies() {
        let peer = peer().await;
        let streams = Streams::new(crate::raft::network::peer_http_client());
        // The first call dials; the rest find its stream.
        assert_eq!(ask(&streams, &peer.url, 0, 2, 5000).await.unwrap(), 4);
        // Slowest first, so the replies come back in the reverse order.
        let calls = (3..13).map(|n| ask(&streams, &peer.url, (13 - n) * 20, n, 5000));
        let answers: Vec<u64> = futures::future::join_all(calls).await.into_iter().map(Result::unwrap).collect();
        assert_eq!(answers, (3..13).map(|n| n * 2).collect::<Vec<_>>());
        assert_eq!(peer.dials.load(Ordering::SeqCst), 1);

        let refused = ask(&streams, &peer.url, 0, 1, 5000).await.unwrap_err();
        assert!(matches!(&refused, PeerCallError::Refused { reason, .. } if reason == "one is not served here"));
        // A refused call leaves the stream as it was.
        assert_eq!(ask(&streams, &peer.url, 0, 7, 5000).await.unwrap(), 14);
        assert_eq!(peer.dials.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_stream_the_peer_closed_is_dialled_again() {
        let peer = peer().await;
        let streams = Streams::new(crate::raft::network::peer_http_client());
        let waiting = {
            let (streams, url) = (streams.clone(), peer.url.clone());
            tokio::spawn(async move { ask(&streams, &url, 0, 0, 5000).await })
        };
        while peer.dials.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        peer.hang_up.notify_waiters();
        // The call in flight fails at once with the reason, not at its timeout.
        let broken = tokio::time::timeout(Duration::from_secs(2), waiting).await.unwrap().unwrap().unwrap_err();
        assert!(matches!(&broken, PeerCallError::Stream { reason, .. } if reason.contains("closed")), "{broken}");
        assert_eq!(ask(&streams, &peer.url, 0, 5, 5000).await.unwrap(), 10);
        assert_eq!(peer.dials.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_peer_silent_too_long_is_dialled_again_but_a_slow_answer_is_not_silence() {
        let peer = peer().await;
        let streams = Streams::new(crate::raft::network::peer_http_client()).silence_limit(Duration::from_millis(200));
        assert_eq!(ask(&streams, &peer.url, 0, 2, 5000).await.unwrap(), 4);
        // A call times out, but the stream has been silent for less than
        // the limit: the next call still goes on it.
        let silent = ask(&streams, &peer.url, 0, 0, 100).await.unwrap_err();
        assert!(matches!(silent, PeerCallError::Timeout { .. }), "{silent}");
        assert_eq!(ask(&streams, &peer.url, 0, 3, 5000).await.unwrap(), 6);
        assert_eq!(peer.dials.load(Ordering::SeqCst), 1);
        // Nothing at all comes back for longer than the limit: the stream
        // is given up.
        let silent = ask(&streams, &peer.url, 0, 0, 250).await.unwrap_err();
        assert!(matches!(silent, PeerCallError::Timeout { .. }), "{silent}");
        assert_eq!(ask(&streams, &peer.url, 0, 3, 5000).await.unwrap(), 6);
        assert_eq!(peer.dials.load(Ordering::SeqCst), 2);
        // One call times out while others are answered: the stream is alive.
        let slow = ask(&streams, &peer.url, 300, 4, 250);
        let quick = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            ask(&streams, &peer.url, 0, 5, 5000).await
        };
        let (slow, quick) = tokio::join!(slow, quick);
        assert!(matches!(slow, Err(PeerCallError::Timeout { .. })), "{slow:?}");
        assert_eq!(quick.unwrap(), 10);
        assert_eq!(ask(&streams, &peer.url, 0, 6, 5000).await.unwrap(), 12);
        assert_eq!(peer.dials.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_peer_without_the_route_is_an_error_naming_its_answer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, axum::Router::new()).await });
        let streams = Streams::new(crate::raft::network::peer_http_client());
        let e = ask(&streams, &url, 0, 2, 5000).await.unwrap_err();
        assert!(matches!(e, PeerCallError::Status { status: 404, .. }), "{e}");
    }

    #[test]
    fn every_kind_survives_its_tag() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_tag(kind.tag()), Some(kind));
        }
        assert_eq!(Kind::from_tag(0), None);
        assert_eq!(Kind::from_tag(ANSWERED), None);
    }
}
