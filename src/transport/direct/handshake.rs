//! The handshake that turns a TCP connection into a link: both ends learn who the other
//! is, check that they speak the same protocol version and, when a token is configured,
//! prove to each other that they know it without sending it.
//!
//! ```text
//! listener                                   dialler
//!    | -- Challenge { v, nonce_L, network, instance } -->  |
//!    | <-- Hello { v, network, instance, endpoint,         |
//!    |            proof = HMAC(token, nonce_L ‖ network ‖ instance), nonce_D } -- |
//!    | -- Welcome { network, instance, endpoint,           |
//!    |            proof = HMAC(token, nonce_D ‖ network ‖ instance) } -->          |
//! ```
//!
//! Either end may answer with `Refuse` instead and close. Proofs are checked with
//! [`Mac::verify_slice`], which takes the same time however many bytes match.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::FramedRead;

use super::config::DirectConfig;
use super::frame::{Frame, FrameCodec, FrameError, PROTOCOL_VERSION, encode_to_bytes};
use super::refusal::{Refusal, RefuseCode};
use super::stats::Counters;
use crate::error::{Error, ErrorKind, Result};
use crate::subject::{validate_instance_id, validate_network_id};

/// The frames read from one connection.
pub(crate) type Reader = FramedRead<OwnedReadHalf, FrameCodec>;

/// The read buffer each connection starts with: large enough that a burst of small frames
/// arrives in a few reads.
const READ_CAPACITY: usize = 64 * 1024;

/// Frames from `read`, refusing bodies over `max_frame_size`.
pub(crate) fn reader(read: OwnedReadHalf, max_frame_size: usize) -> Reader {
    FramedRead::with_capacity(read, FrameCodec::new(max_frame_size), READ_CAPACITY)
}

/// How long a refusing end keeps reading (and discarding) after its last frame, so that
/// the peer receives that frame rather than a reset.
pub(crate) const LINGER: Duration = Duration::from_secs(2);

type HmacSha256 = Hmac<Sha256>;

/// The token proof for `nonce`, `network` and `instance`: HMAC-SHA256 keyed with `token`
/// over the nonce's bytes followed by the UTF-8 bytes of the two ids.
///
/// A dialler proves itself with the listener's challenge nonce and its own ids; the
/// listener answers with the dialler's nonce and its own ids.
pub fn token_proof(token: &str, nonce: &[u8], network: &str, instance: &str) -> Bytes {
    Bytes::copy_from_slice(&mac(token, nonce, network, instance).finalize().into_bytes())
}

fn mac(token: &str, nonce: &[u8], network: &str, instance: &str) -> HmacSha256 {
    let mut mac =
        HmacSha256::new_from_slice(token.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(nonce);
    mac.update(network.as_bytes());
    mac.update(instance.as_bytes());
    mac
}

fn proof_matches(token: &str, nonce: &[u8], network: &str, instance: &str, proof: &[u8]) -> bool {
    mac(token, nonce, network, instance)
        .verify_slice(proof)
        .is_ok()
}

/// 32 random bytes: two version-4 UUIDs, which come from the operating system's generator.
fn nonce() -> Bytes {
    let mut bytes = Vec::with_capacity(32);
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    Bytes::from(bytes)
}

/// Who the other end said it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) network: String,
    pub(crate) instance: String,
    pub(crate) endpoint: Option<String>,
}

impl Identity {
    fn checked(
        network: String,
        instance: String,
        endpoint: Option<String>,
    ) -> Result<Self, Refusal> {
        validate_network_id(&network)
            .and_then(|()| validate_instance_id(&instance))
            .map_err(|err| Refusal::malformed(format!("the peer's ids are not valid: {err}")))?;
        Ok(Identity {
            network,
            instance,
            endpoint,
        })
    }
}

/// Why the listener's side of a handshake did not produce a link.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The dialler broke the protocol or failed authentication; tell it why.
    Refuse(Refusal),
    /// The dialler refused this end.
    Refused { code: RefuseCode, reason: String },
    /// The connection went away; there is nobody to tell.
    Closed(String),
}

impl From<Refusal> for Failure {
    fn from(refusal: Refusal) -> Self {
        Failure::Refuse(refusal)
    }
}

/// Writes one frame straight to the socket (the handshake runs before the link's writer).
pub(crate) async fn send_frame(write: &mut OwnedWriteHalf, frame: &Frame) -> io::Result<()> {
    let bytes = encode_to_bytes(frame).map_err(io::Error::other)?;
    write.write_all(&bytes).await
}

/// Sends `refusal` as the last frame, closes the sending side, and reads until the peer
/// closes too (at most [`LINGER`]), so that the refusal is not lost to a reset.
pub(crate) async fn send_refusal(
    counters: &Counters,
    peer: SocketAddr,
    mut read: OwnedReadHalf,
    mut write: OwnedWriteHalf,
    refusal: &Refusal,
) {
    counters.refusing(peer, refusal);
    let _ = tokio::time::timeout(LINGER, async {
        if send_frame(&mut write, &refusal.to_frame()).await.is_ok() {
            let _ = write.shutdown().await;
            drain(&mut read).await;
        }
    })
    .await;
}

/// Reads and discards until the peer closes or the connection fails.
pub(crate) async fn drain(read: &mut OwnedReadHalf) {
    let mut scratch = [0u8; 4096];
    while matches!(read.read(&mut scratch).await, Ok(n) if n > 0) {}
}

/// The listener's side: challenge the dialler, check its `Hello`, and return who it is with
/// the `Welcome` to send it.
///
/// # Cancel safety
///
/// Not cancel safe: cancelling leaves the connection mid-handshake; drop it.
pub(crate) async fn answer(
    config: &DirectConfig,
    endpoint: Option<&str>,
    reader: &mut Reader,
    write: &mut OwnedWriteHalf,
) -> Result<(Identity, Frame), Failure> {
    let challenge_nonce = nonce();
    send_frame(
        write,
        &Frame::Challenge {
            v: PROTOCOL_VERSION,
            nonce: challenge_nonce.clone(),
            network: config.network_id.clone(),
            instance: config.instance_id.clone(),
        },
    )
    .await
    .map_err(|err| Failure::Closed(format!("sending the challenge failed: {err}")))?;

    let hello = match reader.next().await {
        None => return Err(Failure::Closed("closed before saying Hello".into())),
        Some(Err(err)) => {
            return Err(match Refusal::for_frame_error(&err) {
                Some(refusal) => Failure::Refuse(refusal),
                None => Failure::Closed(err.to_string()),
            });
        }
        Some(Ok(frame)) => frame,
    };
    let (v, network, instance, their_endpoint, proof, their_nonce) = match hello {
        Frame::Hello {
            v,
            network,
            instance,
            endpoint,
            proof,
            nonce,
        } => (v, network, instance, endpoint, proof, nonce),
        Frame::Refuse {
            reason_code,
            reason,
        } => {
            return Err(Failure::Refused {
                code: RefuseCode::from_code(reason_code),
                reason,
            });
        }
        other => return Err(Refusal::unexpected("Hello", &other).into()),
    };
    if v != PROTOCOL_VERSION {
        return Err(Refusal::version(PROTOCOL_VERSION, v).into());
    }
    let identity = Identity::checked(network, instance, their_endpoint)?;
    let whose = format!("'{}'", identity.network);
    check_proof(config, proof, &challenge_nonce, &identity, &whose)?;
    let welcome = Frame::Welcome {
        network: config.network_id.clone(),
        instance: config.instance_id.clone(),
        endpoint: endpoint.map(str::to_owned),
        proof: own_proof(config, &their_nonce),
    };
    Ok((identity, welcome))
}

/// The dialler's side: answer the listener's challenge and check its `Welcome`.
///
/// `addr` is the address as the caller wrote it, for messages; `peer` the socket's.
///
/// # Cancel safety
///
/// Not cancel safe: cancelling leaves the connection mid-handshake; drop it.
pub(crate) async fn dial(
    config: &DirectConfig,
    endpoint: Option<&str>,
    counters: &Counters,
    (addr, peer): (&str, SocketAddr),
    reader: &mut Reader,
    write: &mut OwnedWriteHalf,
) -> Result<Identity> {
    match exchange(config, endpoint, counters, addr, reader, write).await {
        Ok(identity) => Ok(identity),
        Err(Verdict::Fail(err)) => Err(err),
        Err(Verdict::Refuse(refusal)) => {
            counters.refusing(peer, &refusal);
            // If the listener cannot hear why, the returned error still says it.
            let _ = send_frame(write, &refusal.to_frame()).await;
            Err(refusal.to_error(&format!("refused {addr}")))
        }
    }
}

/// How the dialler's side of a handshake failed.
enum Verdict {
    /// Nothing to tell the listener (it refused, or the connection failed).
    Fail(Error),
    /// The listener broke the protocol; tell it why.
    Refuse(Refusal),
}

impl From<Error> for Verdict {
    fn from(err: Error) -> Self {
        Verdict::Fail(err)
    }
}

impl From<Refusal> for Verdict {
    fn from(refusal: Refusal) -> Self {
        Verdict::Refuse(refusal)
    }
}

async fn exchange(
    config: &DirectConfig,
    endpoint: Option<&str>,
    counters: &Counters,
    addr: &str,
    reader: &mut Reader,
    write: &mut OwnedWriteHalf,
) -> Result<Identity, Verdict> {
    let (v, challenge_nonce) = match next_frame(counters, addr, reader).await? {
        Frame::Challenge { v, nonce, .. } => (v, nonce),
        other => return Err(Refusal::unexpected("Challenge", &other).into()),
    };
    if v != PROTOCOL_VERSION {
        return Err(Refusal::version(PROTOCOL_VERSION, v).into());
    }
    let own_nonce = nonce();
    let hello = Frame::Hello {
        v: PROTOCOL_VERSION,
        network: config.network_id.clone(),
        instance: config.instance_id.clone(),
        endpoint: endpoint.map(str::to_owned),
        proof: own_proof(config, &challenge_nonce),
        nonce: own_nonce.clone(),
    };
    send_frame(write, &hello)
        .await
        .map_err(|err| handshake_io(addr, err))?;

    let welcome = next_frame(counters, addr, reader).await?;
    let Frame::Welcome {
        network,
        instance,
        endpoint,
        proof,
    } = welcome
    else {
        return Err(Refusal::unexpected("Welcome", &welcome).into());
    };
    let identity = Identity::checked(network, instance, endpoint)?;
    check_proof(config, proof, &own_nonce, &identity, "the listener")?;
    Ok(identity)
}

/// This end's proof for the peer's `nonce`, when it has a token.
fn own_proof(config: &DirectConfig, nonce: &[u8]) -> Option<Bytes> {
    let token = config.auth_token.as_deref()?;
    Some(token_proof(
        token,
        nonce,
        &config.network_id,
        &config.instance_id,
    ))
}

/// Checks the peer's proof over this end's `nonce` when this end has a token; `whose`
/// names the peer in the refusal.
fn check_proof(
    config: &DirectConfig,
    proof: Option<Bytes>,
    nonce: &[u8],
    peer: &Identity,
    whose: &str,
) -> Result<(), Refusal> {
    let Some(token) = config.auth_token.as_deref() else {
        return Ok(());
    };
    let Some(proof) = proof else {
        return Err(Refusal::authentication(format!(
            "{whose} sent no token proof, and this end requires one"
        )));
    };
    if !proof_matches(token, nonce, &peer.network, &peer.instance, &proof) {
        return Err(Refusal::authentication(format!(
            "the token proof of {whose} does not match"
        )));
    }
    Ok(())
}

/// The next frame of a handshake the dialler runs; a `Refuse` becomes the error it names.
async fn next_frame(counters: &Counters, addr: &str, reader: &mut Reader) -> Result<Frame> {
    match reader.next().await {
        None => Err(Error::new(
            ErrorKind::NetworkDisconnected,
            format!("{addr} closed the connection during the handshake"),
        )),
        Some(Err(FrameError::Io(err))) => Err(handshake_io(addr, err)),
        Some(Err(err)) => Err(Error::new(
            ErrorKind::Protocol,
            format!("{addr} sent a bad frame during the handshake: {err}"),
        )),
        Some(Ok(Frame::Refuse {
            reason_code,
            reason,
        })) => {
            counters.refused_by(addr, RefuseCode::from_code(reason_code), &reason);
            Err(Refusal::into_error(
                reason_code,
                &reason,
                &format!("{addr} refused the link"),
            ))
        }
        Some(Ok(frame)) => Ok(frame),
    }
}

fn handshake_io(addr: &str, err: io::Error) -> Error {
    Error::with_source(
        ErrorKind::NetworkDisconnected,
        format!("the connection to {addr} failed during the handshake"),
        err,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_verifies_only_with_the_same_token_nonce_and_ids() {
        let proof = token_proof("s3cret", b"nonce", "prod.ml", "i-1");
        assert_eq!(proof.len(), 32);
        assert!(proof_matches("s3cret", b"nonce", "prod.ml", "i-1", &proof));
        assert!(!proof_matches("other", b"nonce", "prod.ml", "i-1", &proof));
        assert!(!proof_matches(
            "s3cret", b"nonce2", "prod.ml", "i-1", &proof
        ));
        assert!(!proof_matches("s3cret", b"nonce", "prod.ml", "i-2", &proof));
        assert!(!proof_matches(
            "s3cret",
            b"nonce",
            "prod.ml",
            "i-1",
            &proof[..31]
        ));
    }

    #[test]
    fn a_proof_is_hmac_sha256_over_nonce_then_ids() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let proof = token_proof("Jefe", b"what do ya ", "want for", " nothing?");
        let hex: String = proof.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn nonces_do_not_repeat() {
        let a = nonce();
        assert_eq!(a.len(), 32);
        assert_ne!(a, nonce());
    }

    #[test]
    fn ids_that_are_not_valid_names_are_refused_as_malformed() {
        let refusal = Identity::checked("_reflow".into(), "i".into(), None).unwrap_err();
        assert_eq!(refusal.code, RefuseCode::MalformedFrame);
        assert!(refusal.reason.contains("_reflow"), "{}", refusal.reason);
    }
}
