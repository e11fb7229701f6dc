//! Helpers for `tests/direct.rs`: transports with their inboxes, bounded waits, and a
//! hand-written client that speaks the wire protocol with nothing but the codec.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use reflow_network::transport::direct::frame::{
    Frame, FrameCodec, PROTOCOL_VERSION, encode_to_bytes,
};
use reflow_network::transport::direct::{DirectConfig, DirectTransport, Inbound, RefuseCode};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// A transport and the channel its owner reads.
pub(crate) struct Node {
    pub(crate) transport: DirectTransport,
    pub(crate) inbox: mpsc::Receiver<Inbound>,
}

impl Node {
    pub(crate) fn endpoint(&self) -> String {
        self.transport
            .advertised_endpoint()
            .expect("a listening node")
    }

    /// The next inbound item that `pick` accepts, skipping the others; bounded by `WAIT`.
    pub(crate) async fn next<T>(&mut self, mut pick: impl FnMut(Inbound) -> Option<T>) -> T {
        tokio::time::timeout(WAIT, async {
            loop {
                let item = self.inbox.recv().await.expect("inbox open");
                if let Some(found) = pick(item) {
                    return found;
                }
            }
        })
        .await
        .expect("the expected inbound item within the deadline")
    }

    pub(crate) async fn next_message(&mut self) -> (String, Bytes) {
        self.next(|item| match item {
            Inbound::Message {
                subject, payload, ..
            } => Some((subject, payload)),
            _ => None,
        })
        .await
    }

    pub(crate) async fn next_down(&mut self) -> (String, String) {
        self.next(|item| match item {
            Inbound::PeerDown { peer, reason } => Some((peer.network.clone(), reason)),
            _ => None,
        })
        .await
    }
}

pub(crate) fn config(network: &str, token: Option<&str>) -> DirectConfig {
    let mut config = DirectConfig::new(network, format!("{network}-1"));
    config.auth_token = token.map(str::to_owned);
    config
}

pub(crate) async fn start(config: DirectConfig, listen: bool) -> Node {
    start_with_inbox(config, listen, 256).await
}

pub(crate) async fn start_with_inbox(config: DirectConfig, listen: bool, inbox: usize) -> Node {
    let (tx, inbox) = mpsc::channel(inbox);
    let bind = listen.then(|| "127.0.0.1:0".parse().unwrap());
    let transport = DirectTransport::start(config, bind, tx)
        .await
        .expect("start");
    Node { transport, inbox }
}

/// Polls `condition` every 20 ms until it holds, for at most `WAIT`.
pub(crate) async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A hand-written client: the codec, and nothing of the transport's own logic.
pub(crate) async fn raw(endpoint: &str) -> Framed<TcpStream, FrameCodec> {
    let stream = TcpStream::connect(endpoint).await.expect("raw connect");
    Framed::new(stream, FrameCodec::default())
}

pub(crate) async fn next_frame(raw: &mut Framed<TcpStream, FrameCodec>) -> Option<Frame> {
    tokio::time::timeout(WAIT, raw.next())
        .await
        .expect("a frame or a close within the deadline")
        .map(|frame| frame.expect("a well-formed frame"))
}

pub(crate) async fn challenge_nonce(raw: &mut Framed<TcpStream, FrameCodec>) -> Bytes {
    match next_frame(raw).await {
        Some(Frame::Challenge { v, nonce, .. }) => {
            assert_eq!(v, PROTOCOL_VERSION);
            nonce
        }
        other => panic!("expected a Challenge, got {other:?}"),
    }
}

/// Reads past pings to the `Refuse`, then checks that the connection closes.
pub(crate) async fn refusal(raw: &mut Framed<TcpStream, FrameCodec>) -> (RefuseCode, String) {
    loop {
        match next_frame(raw).await {
            Some(Frame::Refuse {
                reason_code,
                reason,
            }) => {
                assert_eq!(next_frame(raw).await, None, "closed after the refusal");
                return (RefuseCode::from_code(reason_code), reason);
            }
            Some(Frame::Ping { .. } | Frame::Challenge { .. } | Frame::Welcome { .. }) => {}
            other => panic!("expected a Refuse, got {other:?}"),
        }
    }
}

pub(crate) fn hello(network: &str, v: u16, proof: Option<Bytes>) -> Frame {
    Frame::Hello {
        v,
        network: network.into(),
        instance: format!("{network}-1"),
        endpoint: None,
        proof,
        nonce: Bytes::from_static(&[7; 32]),
    }
}

/// One frame as bytes on the wire.
pub(crate) fn frame(frame: Frame) -> Vec<u8> {
    encode_to_bytes(&frame).expect("encodable").to_vec()
}

/// Connects a raw client, reads the challenge, sends what `answer` makes of its nonce,
/// and returns the refusal that follows.
pub(crate) async fn refusal_for(
    endpoint: &str,
    answer: impl FnOnce(&Bytes) -> Vec<u8>,
) -> (RefuseCode, String) {
    let mut client = raw(endpoint).await;
    let nonce = challenge_nonce(&mut client).await;
    client
        .get_mut()
        .write_all(&answer(&nonce))
        .await
        .expect("raw write");
    refusal(&mut client).await
}
