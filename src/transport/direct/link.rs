//! One established link: a writer task, a reader task, and the handle that feeds them.
//!
//! The writer drains two bounded queues, control frames (pongs, pings, refusals) before
//! data frames (messages, requests, replies), and writes everything queued at that moment
//! with a single socket write: one system call carries a whole burst. Data frames keep
//! the order in which they were queued.
//!
//! The reader hands every message to the owner's bounded channel and waits while it is
//! full, so a slow owner slows the socket, and through TCP the peer, rather than dropping.
//! It also pings the peer every `ping_interval` and cuts the link when nothing has been
//! heard for `ping_timeout`. A link ends on Goodbye, Refuse, EOF, an unreadable frame, a
//! socket error, silence, or a local close; its `PeerDown` says which.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::frame::{Frame, encode_frame};
use super::handshake::{LINGER, Reader, drain};
use super::peer::{Inbound, PeerInfo, Replier};
use super::refusal::{Refusal, RefuseCode};
use super::stats::Counters;
use crate::error::{Error, ErrorKind, Result};

/// Writes stop gathering frames into one batch past this many bytes.
const BATCH_BYTES: usize = 256 * 1024;

/// Room for control frames; they are small and sent ahead of data.
const CONTROL_CAPACITY: usize = 64;

/// The bytes a message frame adds around its subject and payload, with room to spare.
const FRAME_OVERHEAD: usize = 64;

type Answer = std::result::Result<Bytes, String>;

/// The handle of one link, shared by the transport, its tasks and its repliers.
pub(crate) struct Link {
    pub(crate) id: u64,
    pub(crate) peer: Arc<PeerInfo>,
    /// The address this end dialled, for outbound links.
    pub(crate) dialled: Option<String>,
    max_frame_size: usize,
    data: mpsc::Sender<Frame>,
    control: mpsc::Sender<Frame>,
    next_id: AtomicU64,
    requests: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    pings: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    /// Why the link ended (the first reason given wins) and the frame to send last.
    ending: Mutex<Option<String>>,
    last_words: Mutex<Option<Frame>>,
    /// Asks the writer to drain its queues, send the last words and close.
    graceful: CancellationToken,
    /// Stops both tasks at once.
    hard: CancellationToken,
    /// Cancelled once the reader has finished and `PeerDown` has been handed over.
    done: CancellationToken,
}

/// What a new link is made of, once its handshake is over.
pub(crate) struct Parts {
    pub(crate) peer: PeerInfo,
    pub(crate) dialled: Option<String>,
    pub(crate) reader: Reader,
    pub(crate) write: OwnedWriteHalf,
    /// A frame the writer sends before anything queued (the listener's `Welcome`).
    pub(crate) first: Option<Frame>,
    /// The listener's connection slot, held for as long as the link lives.
    pub(crate) permit: Option<OwnedSemaphorePermit>,
}

/// Registers a link built from `parts` with `shared` and starts its two tasks.
pub(crate) fn start(shared: &Arc<Shared>, parts: Parts) -> Arc<Link> {
    let (data_tx, data_rx) = mpsc::channel(shared.config.outbound_capacity);
    let (control_tx, control_rx) = mpsc::channel(CONTROL_CAPACITY);
    let link = Arc::new(Link {
        id: shared.next_link_id(),
        peer: Arc::new(parts.peer),
        dialled: parts.dialled,
        max_frame_size: shared.config.max_frame_size,
        data: data_tx,
        control: control_tx,
        next_id: AtomicU64::new(1),
        requests: Mutex::new(HashMap::new()),
        pings: Mutex::new(HashMap::new()),
        ending: Mutex::new(None),
        last_words: Mutex::new(None),
        graceful: CancellationToken::new(),
        hard: shared.root.child_token(),
        done: CancellationToken::new(),
    });
    tracing::info!(
        peer = %link.peer.addr,
        network = %link.peer.network,
        instance = %link.peer.instance,
        inbound = link.peer.inbound,
        "direct link up"
    );
    shared.add_link(link.clone());
    let writer = Writer {
        shared: shared.clone(),
        link: link.clone(),
        data: data_rx,
        control: control_rx,
        write: parts.write,
        buf: BytesMut::with_capacity(64 * 1024),
        queued: 0,
    };
    shared.tracker.spawn(writer.run(parts.first));
    shared.tracker.spawn(read_loop(
        shared.clone(),
        link.clone(),
        parts.reader,
        parts.permit,
    ));
    link
}

impl Link {
    fn disconnected(&self) -> Error {
        let why = self.ending.lock().clone();
        Error::new(
            ErrorKind::NetworkDisconnected,
            match why {
                Some(why) => format!("the direct link to '{}' closed: {why}", self.peer.network),
                None => format!("the direct link to '{}' closed", self.peer.network),
            },
        )
    }

    /// Fails with `Payload too large` when `len` payload bytes cannot fit in one frame.
    pub(crate) fn check_size(&self, what: &str, len: usize) -> Result<()> {
        let limit = self.max_frame_size.saturating_sub(FRAME_OVERHEAD);
        if len > limit {
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "a {what} of {len} bytes does not fit the direct link's limit of {limit} bytes (max_frame_size {})",
                    self.max_frame_size
                ),
            ));
        }
        Ok(())
    }

    /// Queues a data frame, waiting while the queue is full.
    pub(crate) async fn send(&self, frame: Frame) -> Result<()> {
        self.data.send(frame).await.map_err(|_| self.disconnected())
    }

    /// Queues a control frame if there is room; control frames are never worth waiting for.
    pub(crate) fn try_control(&self, frame: Frame) -> bool {
        self.control.try_send(frame).is_ok()
    }

    /// Publishes `payload` on `subject`.
    pub(crate) async fn publish(&self, subject: &str, payload: Bytes) -> Result<()> {
        self.check_size("message", subject.len() + payload.len())?;
        self.send(Frame::Message {
            subject: subject.to_owned(),
            payload,
        })
        .await
    }

    /// Sends a request and waits up to `timeout` for its reply.
    pub(crate) async fn request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes> {
        self.check_size("request", subject.len() + payload.len())?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.requests.lock().insert(id, tx);
        let _forget = Forget(&self.requests, id);
        let sent = async {
            self.send(Frame::Request {
                id,
                subject: subject.to_owned(),
                payload,
            })
            .await?;
            rx.await.map_err(|_| self.disconnected())
        };
        match tokio::time::timeout(timeout, sent).await {
            Err(_) => Err(Error::timeout(
                format_args!("request to '{}' on {subject:?}", self.peer.network),
                timeout,
            )),
            Ok(Err(err)) => Err(err),
            Ok(Ok(Ok(reply))) => Ok(reply),
            Ok(Ok(Err(why))) => Err(Error::new(
                ErrorKind::Actor,
                format!(
                    "network '{}' failed to answer {subject:?}: {why}",
                    self.peer.network
                ),
            )),
        }
    }

    /// Pings the peer and waits up to `timeout` for the pong.
    pub(crate) async fn ping(&self, timeout: Duration) -> Result<Duration> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pings.lock().insert(id, tx);
        let _forget = Forget(&self.pings, id);
        let started = Instant::now();
        let answered = async {
            self.control
                .send(Frame::Ping { id })
                .await
                .map_err(|_| self.disconnected())?;
            rx.await.map_err(|_| self.disconnected())
        };
        match tokio::time::timeout(timeout, answered).await {
            Err(_) => Err(Error::timeout(
                format_args!("ping to '{}'", self.peer.network),
                timeout,
            )),
            Ok(result) => result.map(|()| started.elapsed()),
        }
    }

    /// Starts closing: the writer sends what is queued, then `last_words`, then closes.
    /// The first reason given is the one `PeerDown` reports.
    pub(crate) fn close(&self, reason: String, last_words: Option<Frame>) {
        let mut ending = self.ending.lock();
        if ending.is_none() {
            *ending = Some(reason);
            *self.last_words.lock() = last_words;
        }
        self.graceful.cancel();
    }

    /// Stops both tasks now, without draining.
    pub(crate) fn cut(&self) {
        self.hard.cancel();
    }

    /// Waits until the reader has finished and `PeerDown` has been handed over.
    pub(crate) async fn closed(&self) {
        self.done.cancelled().await;
    }
}

/// Removes a pending entry when the waiting call returns or is cancelled.
struct Forget<'a, T>(&'a Mutex<HashMap<u64, T>>, u64);

impl<T> Drop for Forget<'_, T> {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

/// The task that owns the socket's sending half.
struct Writer {
    shared: Arc<Shared>,
    link: Arc<Link>,
    data: mpsc::Receiver<Frame>,
    control: mpsc::Receiver<Frame>,
    write: OwnedWriteHalf,
    buf: BytesMut,
    queued: u64,
}

impl Writer {
    async fn run(mut self, first: Option<Frame>) {
        if let Some(frame) = first {
            self.push(&frame);
        }
        loop {
            if self.buf.is_empty() {
                let frame = tokio::select! {
                    biased;
                    _ = self.link.hard.cancelled() => return,
                    _ = self.link.graceful.cancelled() => break,
                    Some(frame) = self.control.recv() => frame,
                    Some(frame) = self.data.recv() => frame,
                    else => break,
                };
                self.push(&frame);
            }
            while self.buf.len() < BATCH_BYTES {
                match self.control.try_recv().or_else(|_| self.data.try_recv()) {
                    Ok(frame) => self.push(&frame),
                    Err(_) => break,
                }
            }
            if !self.flush().await {
                return;
            }
        }
        // Closing: nothing new gets in, everything already queued still goes out.
        self.control.close();
        self.data.close();
        while let Some(frame) = self.next_queued() {
            self.push(&frame);
            if self.buf.len() >= BATCH_BYTES && !self.flush().await {
                return;
            }
        }
        let last_words = self.link.last_words.lock().take();
        if let Some(frame) = last_words {
            self.push(&frame);
        }
        if self.flush().await {
            tokio::select! {
                _ = self.link.hard.cancelled() => {}
                _ = self.write.shutdown() => {}
            }
        }
    }

    fn next_queued(&mut self) -> Option<Frame> {
        self.control
            .try_recv()
            .or_else(|_| self.data.try_recv())
            .ok()
    }

    fn push(&mut self, frame: &Frame) {
        match encode_frame(frame, &mut self.buf) {
            Ok(()) => self.queued += 1,
            Err(err) => tracing::error!(peer = %self.link.peer.addr, "dropping a frame: {err}"),
        }
    }

    /// Writes the batch; on failure the link is cut and `false` returned.
    async fn flush(&mut self) -> bool {
        if self.buf.is_empty() {
            return true;
        }
        let written = tokio::select! {
            biased;
            _ = self.link.hard.cancelled() => return false,
            written = self.write.write_all(&self.buf) => written,
        };
        match written {
            Ok(()) => {
                let counters = &self.shared.counters;
                Counters::add(&counters.frames_out, self.queued);
                Counters::add(&counters.bytes_out, self.buf.len() as u64);
                self.buf.clear();
                self.queued = 0;
                true
            }
            Err(err) => {
                self.link
                    .close(format!("writing to the peer failed: {err}"), None);
                self.link.cut();
                false
            }
        }
    }
}

/// How a reader stopped.
enum Ending {
    /// Nothing to tell the peer (it left, or the socket failed).
    Quiet(String),
    /// Tell the peer why, then close.
    Refuse(Refusal),
    /// Say goodbye with this reason.
    Goodbye(String),
}

async fn read_loop(
    shared: Arc<Shared>,
    link: Arc<Link>,
    mut reader: Reader,
    permit: Option<OwnedSemaphorePermit>,
) {
    let _permit = permit;
    let ending = match deliver(&shared, &link, Inbound::PeerUp(link.peer.clone())).await {
        Some(ending) => ending,
        None => read_frames(&shared, &link, &mut reader).await,
    };
    let mut linger = None;
    match ending {
        Ending::Quiet(reason) => link.close(reason, None),
        Ending::Goodbye(reason) => link.close(reason.clone(), Some(Frame::Goodbye { reason })),
        Ending::Refuse(refusal) => {
            shared.counters.refusing(link.peer.addr, &refusal);
            link.close(refusal.reason.clone(), Some(refusal.to_frame()));
            linger = Some(reader.into_inner());
        }
    }
    shared.remove_link(&link);
    link.requests.lock().clear();
    link.pings.lock().clear();
    let reason = link.ending.lock().clone().unwrap_or_default();
    tracing::info!(peer = %link.peer.addr, network = %link.peer.network, "direct link down: {reason}");
    let down = Inbound::PeerDown {
        peer: link.peer.clone(),
        reason,
    };
    deliver(&shared, &link, down).await;
    if let Some(mut read) = linger {
        // Keep reading until the peer closes, so it gets the refusal and not a reset.
        tokio::select! {
            _ = link.hard.cancelled() => {}
            _ = tokio::time::timeout(LINGER, drain(&mut read)) => {}
        }
    }
    link.done.cancel();
}

/// Hands `item` to the owner, waiting while its channel is full. Returns how the link
/// must end when it cannot.
async fn deliver(shared: &Shared, link: &Link, item: Inbound) -> Option<Ending> {
    // Room is reserved before the item is moved, so a cut never loses it half-sent, and a
    // channel with room takes it even while the link is being cut (the last `PeerDown`).
    let room = tokio::select! {
        biased;
        room = shared.inbound.reserve() => room,
        _ = link.hard.cancelled() => {
            return Some(Ending::Quiet("the transport shut down".into()));
        }
    };
    match room {
        Ok(room) => {
            room.send(item);
            None
        }
        Err(_) => Some(Ending::Goodbye(
            "the receiving end stopped listening".into(),
        )),
    }
}

async fn read_frames(shared: &Shared, link: &Arc<Link>, reader: &mut Reader) -> Ending {
    let config = &shared.config;
    let mut ticker =
        tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut decoded = 0;
    loop {
        let next = tokio::select! {
            _ = link.hard.cancelled() => return Ending::Quiet("the transport shut down".into()),
            _ = ticker.tick() => {
                if last_heard.elapsed() >= config.ping_timeout {
                    return Ending::Refuse(Refusal::ping_timeout(config.ping_timeout));
                }
                let id = link.next_id.fetch_add(1, Ordering::Relaxed);
                link.try_control(Frame::Ping { id });
                continue;
            }
            next = reader.next() => next,
        };
        let frame = match next {
            None => return Ending::Quiet("the peer closed the connection".into()),
            Some(Err(err)) => {
                return match Refusal::for_frame_error(&err) {
                    Some(refusal) => Ending::Refuse(refusal),
                    None => Ending::Quiet(err.to_string()),
                };
            }
            Some(Ok(frame)) => frame,
        };
        let total = reader.decoder().decoded_bytes();
        Counters::add(&shared.counters.frames_in, 1);
        Counters::add(&shared.counters.bytes_in, total - decoded);
        decoded = total;
        if let Some(ending) = handle(shared, link, frame).await {
            return ending;
        }
        // Measured after the owner took the frame, so time spent waiting on a slow owner
        // never counts as the peer's silence.
        last_heard = Instant::now();
    }
}

async fn handle(shared: &Shared, link: &Arc<Link>, frame: Frame) -> Option<Ending> {
    let peer = || link.peer.clone();
    match frame {
        Frame::Message { subject, payload } => {
            if shared
                .notices
                .get()
                .is_some_and(|notices| notices.take(&subject, &payload))
            {
                return None;
            }
            let item = Inbound::Message {
                peer: peer(),
                subject,
                payload,
            };
            return deliver(shared, link, item).await;
        }
        Frame::Request {
            id,
            subject,
            payload,
        } => {
            let item = Inbound::Request {
                peer: peer(),
                subject,
                payload,
                reply: Replier::new(link.clone(), id),
            };
            return deliver(shared, link, item).await;
        }
        Frame::Reply { id, payload, error } => {
            if let Some(waiter) = link.requests.lock().remove(&id) {
                let _ = waiter.send(error.map_or(Ok(payload), Err));
            }
        }
        Frame::Ping { id } => {
            // A full control queue means pongs are already waiting to go; skipping one is
            // harmless, and waiting here could deadlock two peers that both stopped reading.
            link.try_control(Frame::Pong { id });
        }
        Frame::Pong { id } => {
            if let Some(waiter) = link.pings.lock().remove(&id) {
                let _ = waiter.send(());
            }
        }
        Frame::Goodbye { reason } => {
            return Some(Ending::Quiet(format!("the peer said goodbye: {reason}")));
        }
        Frame::Refuse {
            reason_code,
            reason,
        } => {
            let addr = link.peer.addr.to_string();
            let code = RefuseCode::from_code(reason_code);
            shared.counters.refused_by(&addr, code, &reason);
            return Some(Ending::Quiet(format!("the peer cut the link: {reason}")));
        }
        other @ (Frame::Challenge { .. } | Frame::Hello { .. } | Frame::Welcome { .. }) => {
            return Some(Ending::Refuse(Refusal::unexpected(
                "a link frame after the handshake",
                &other,
            )));
        }
    }
    None
}
