//! The direct TCP transport over real loopback sockets: links, streaming, request/reply,
//! pings, and every refusal, including those only a hand-written client can provoke.

mod direct_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use direct_support::*;
use futures::SinkExt;
use reflow_network::ErrorKind;
use reflow_network::transport::direct::frame::{Frame, FrameCodec, PROTOCOL_VERSION};
use reflow_network::transport::direct::{DirectTransport, Inbound, RefuseCode, token_proof};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

#[tokio::test]
async fn two_transports_link_and_stream_ten_thousand_messages_in_order() {
    let mut server = start(config("server", Some("t0ken")), true).await;
    let mut client = start(config("client", Some("t0ken")), false).await;

    let peer = client.transport.connect(&server.endpoint()).await.unwrap();
    assert_eq!(peer.network, "server");
    assert!(!peer.inbound);
    let up = server
        .next(|item| match item {
            Inbound::PeerUp(peer) => Some(peer),
            _ => None,
        })
        .await;
    assert_eq!((up.network.as_str(), up.inbound), ("client", true));
    assert!(server.transport.is_linked("client") && client.transport.is_linked("server"));

    const COUNT: u64 = 10_000;
    let started = Instant::now();
    let sender = client.transport.clone();
    let publishing = tokio::spawn(async move {
        for i in 0..COUNT {
            let payload = Bytes::copy_from_slice(&i.to_be_bytes());
            sender
                .publish("server", "server.sink.in", payload)
                .await
                .unwrap();
        }
    });
    for i in 0..COUNT {
        let (subject, payload) = server.next_message().await;
        assert_eq!(subject, "server.sink.in");
        assert_eq!(u64::from_be_bytes(payload[..].try_into().unwrap()), i);
    }
    let elapsed = started.elapsed();
    publishing.await.unwrap();
    eprintln!(
        "10,000 messages in {elapsed:?}: {:.0} messages/s",
        COUNT as f64 / elapsed.as_secs_f64()
    );

    // And back the other way, on the same link.
    server
        .transport
        .publish("client", "client.sink.in", Bytes::from_static(b"back"))
        .await
        .unwrap();
    assert_eq!(client.next_message().await.1, Bytes::from_static(b"back"));

    let stats = server.transport.stats();
    assert_eq!((stats.accepted, stats.active_links), (1, 1));
    assert!(
        stats.frames_in >= COUNT && stats.bytes_in > COUNT * 20,
        "{stats:?}"
    );
    assert!(client.transport.stats().frames_out >= COUNT);
}

#[tokio::test]
async fn a_slow_owner_holds_the_sender_back_without_losing_anything() {
    let mut tight = config("server", None);
    tight.outbound_capacity = 4;
    let mut server = start_with_inbox(tight.clone(), true, 2).await;
    tight.network_id = "client".into();
    let client = start(tight, false).await;
    client.transport.connect(&server.endpoint()).await.unwrap();

    const COUNT: u32 = 3_000;
    let sender = client.transport.clone();
    let publishing = tokio::spawn(async move {
        for i in 0..COUNT {
            let payload = Bytes::copy_from_slice(&i.to_be_bytes());
            sender.publish("server", "s", payload).await.unwrap();
        }
    });
    for i in 0..COUNT {
        let (_, payload) = server.next_message().await;
        assert_eq!(u32::from_be_bytes(payload[..].try_into().unwrap()), i);
        if i % 500 == 0 {
            // The owner dawdles; the sender must wait, not drop.
            tokio::task::yield_now().await;
        }
    }
    publishing.await.unwrap();
}

#[tokio::test]
async fn requests_are_answered_and_failures_come_back_as_errors() {
    let mut server = start(config("server", None), true).await;
    let client = start(config("client", None), false).await;
    client.transport.connect(&server.endpoint()).await.unwrap();

    let responder = tokio::spawn(async move {
        while let Some(item) = server.inbox.recv().await {
            if let Inbound::Request {
                subject,
                payload,
                reply,
                ..
            } = item
            {
                match subject.as_str() {
                    "echo" => reply.send(Ok(payload)).await.unwrap(),
                    "fail" => reply.send(Err("no such actor".into())).await.unwrap(),
                    _ => drop(reply),
                }
            }
        }
    });

    let ask = |network: &'static str, subject: &'static str| {
        let transport = client.transport.clone();
        async move {
            transport
                .request(network, subject, Bytes::from_static(b"hi"), WAIT)
                .await
        }
    };
    assert_eq!(ask("server", "echo").await.unwrap(), "hi");

    let err = ask("server", "fail").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Actor);
    assert!(err.to_string().contains("no such actor"), "{err}");

    let err = ask("server", "ignored").await.unwrap_err();
    assert!(err.to_string().contains("dropped without a reply"), "{err}");

    let err = ask("nowhere", "echo").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NetworkNotConnected);
    assert!(err.to_string().contains("'nowhere'"), "{err}");

    client.transport.shutdown().await;
    responder.abort();
}

#[tokio::test]
async fn ping_measures_a_round_trip() {
    let server = start(config("server", None), true).await;
    let client = start(config("client", None), false).await;
    client.transport.connect(&server.endpoint()).await.unwrap();

    let rtt = client.transport.ping("server").await.unwrap();
    assert!(rtt > Duration::ZERO && rtt < WAIT, "{rtt:?}");
    let back = server.transport.ping("client").await.unwrap();
    assert!(back < WAIT);
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_refused_on_both_sides_and_counted() {
    let server = start(config("server", Some("right")), true).await;

    let wrong = start(config("wrong", Some("guess")), false).await;
    let err = wrong
        .transport
        .connect(&server.endpoint())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AuthenticationFailed);
    assert!(
        err.to_string().starts_with("Authentication failed"),
        "{err}"
    );
    assert!(err.to_string().contains(&server.endpoint()), "{err}");

    let missing = start(config("missing", None), false).await;
    let err = missing
        .transport
        .connect(&server.endpoint())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AuthenticationFailed);
    assert!(err.to_string().contains("no token proof"), "{err}");

    wait_until("the server counted both refusals", || {
        server
            .transport
            .stats()
            .refused_for(RefuseCode::AuthenticationFailed)
            == 2
    })
    .await;
    assert_eq!(
        wrong.transport.stats().refused_by_peers[&RefuseCode::AuthenticationFailed],
        1
    );
    assert_eq!(server.transport.stats().active_links, 0);

    // Mutual: a dialler with a token refuses a listener that cannot prove it.
    let open = start(config("open", None), true).await;
    let err = wrong.transport.connect(&open.endpoint()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AuthenticationFailed);
    assert!(
        err.to_string().contains("the listener sent no token proof"),
        "{err}"
    );
    assert_eq!(
        wrong
            .transport
            .stats()
            .refused_for(RefuseCode::AuthenticationFailed),
        1
    );
}

#[tokio::test]
async fn a_protocol_version_mismatch_is_refused_naming_both_versions() {
    let server = start(config("server", None), true).await;
    let theirs = PROTOCOL_VERSION + 1;

    let (code, reason) =
        refusal_for(&server.endpoint(), |_| frame(hello("future", theirs, None))).await;
    assert_eq!(code, RefuseCode::VersionMismatch);
    assert!(
        reason.contains(&format!("version {PROTOCOL_VERSION}"))
            && reason.contains(&format!("version {theirs}")),
        "{reason}"
    );

    // The dialler checks too: a listener from the future is refused with a clear error.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let future_listener = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut framed = Framed::new(stream, FrameCodec::default());
        let challenge = Frame::Challenge {
            v: theirs,
            nonce: Bytes::from_static(&[1; 32]),
            network: "future".into(),
            instance: "f-1".into(),
        };
        framed.send(challenge).await.unwrap();
        next_frame(&mut framed).await
    });
    let dialler = start(config("dialler", None), false).await;
    let err = dialler.transport.connect(&addr).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol);
    assert!(
        err.to_string().contains(&format!("version {theirs}")),
        "{err}"
    );
    let told = future_listener.await.unwrap();
    assert!(
        matches!(told, Some(Frame::Refuse { reason_code: 2, .. })),
        "{told:?}"
    );
}

#[tokio::test]
async fn max_connections_refuses_the_link_past_the_limit_and_frees_its_slot() {
    let mut limited = config("server", None);
    limited.max_connections = 1;
    let server = start(limited, true).await;
    let first = start(config("first", None), false).await;
    let second = start(config("second", None), false).await;

    first.transport.connect(&server.endpoint()).await.unwrap();
    let err = second
        .transport
        .connect(&server.endpoint())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MaxConnections);
    assert!(
        err.to_string().contains("max connections reached") && err.to_string().ends_with("(1)"),
        "{err}"
    );
    wait_until("the refusal is counted", || {
        server
            .transport
            .stats()
            .refused_for(RefuseCode::MaxConnections)
            == 1
    })
    .await;

    first.transport.disconnect("server").await.unwrap();
    wait_until("the server let go of the first link", || {
        server.transport.peers().is_empty()
    })
    .await;
    second.transport.connect(&server.endpoint()).await.unwrap();
    assert!(server.transport.is_linked("second"));
}

#[tokio::test]
async fn idle_handshakes_do_not_keep_a_legitimate_peer_out() {
    // The attack from the field: as many idle connections as max_connections, renewed
    // before the handshake timeout, so the listener always holds that many unfinished
    // handshakes. Every legitimate dial still gets through.
    const MAX: usize = 10;
    let mut limited = config("server", None);
    limited.max_connections = MAX;
    limited.handshake_timeout = Duration::from_millis(500);
    let server = start(limited, true).await;
    let endpoint = server.endpoint();
    let mut idle: Vec<tokio::net::TcpStream> = Vec::new();
    for _ in 0..MAX {
        idle.push(tokio::net::TcpStream::connect(&endpoint).await.unwrap());
    }
    let mut linked = 0;
    for round in 0..20 {
        // Renew the idle connections now and then, as the attacker would.
        if round % 5 == 0 {
            idle.clear();
            for _ in 0..MAX {
                idle.push(tokio::net::TcpStream::connect(&endpoint).await.unwrap());
            }
        }
        let peer = start(config(&format!("peer{round}"), None), false).await;
        peer.transport.connect(&endpoint).await.unwrap();
        assert!(peer.transport.is_linked("server"));
        linked += 1;
        peer.transport.shutdown().await;
    }
    assert_eq!(linked, 20);
    // Past the handshake cap from one address, a connection is refused at once, with a
    // reason, rather than held.
    let mut flood = Vec::new();
    for _ in 0..(2 * MAX).max(16) {
        flood.push(tokio::net::TcpStream::connect(&endpoint).await.unwrap());
    }
    let mut extra = raw(&endpoint).await;
    let (code, reason) = refusal(&mut extra).await;
    assert_eq!(code, RefuseCode::MaxConnections);
    assert!(
        reason.contains("too many handshakes in progress"),
        "{reason}"
    );
}

/// `n` idle connections to `endpoint` from the loopback address `source`.
async fn idle_from(source: &str, endpoint: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut idle = Vec::new();
    for _ in 0..n {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        idle.push(socket.connect(endpoint.parse().unwrap()).await.unwrap());
    }
    idle
}

#[tokio::test]
async fn idle_sockets_from_many_addresses_do_not_keep_a_peer_from_another_out() {
    // The attack from the field: every handshake place taken by idle sockets from four
    // addresses (20 each, the most one address may hold at max_connections 10), renewed
    // before the handshake timeout. A peer from another address still gets through
    // every time: it takes the place of the oldest idle socket of an address holding
    // the most.
    const MAX: usize = 10;
    let mut limited = config("server", None);
    limited.max_connections = MAX;
    limited.handshake_timeout = Duration::from_millis(2_000);
    let server = start(limited, true).await;
    let endpoint = server.endpoint();
    let sources = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];
    let mut idle = Vec::new();
    let mut linked = 0;
    for round in 0..36 {
        if round % 6 == 0 {
            idle.clear();
            for source in sources {
                idle.extend(idle_from(source, &endpoint, 2 * MAX).await);
            }
        }
        let peer = start(config(&format!("peer{round}"), None), false).await;
        peer.transport.connect(&endpoint).await.unwrap();
        assert!(peer.transport.is_linked("server"));
        linked += 1;
        peer.transport.shutdown().await;
    }
    assert_eq!(linked, 36);
}

#[tokio::test]
async fn bad_clients_are_refused_with_their_reason_while_a_good_peer_keeps_talking() {
    let mut server = start(config("server", Some("right")), true).await;
    let mut good = start(config("good", Some("right")), false).await;
    good.transport.connect(&server.endpoint()).await.unwrap();
    let exchange = |server: &DirectTransport, good: &DirectTransport, round: &'static str| {
        let (server, good) = (server.clone(), good.clone());
        async move {
            good.publish("server", "up", Bytes::from(round))
                .await
                .unwrap();
            server
                .publish("good", "down", Bytes::from(round))
                .await
                .unwrap();
        }
    };
    exchange(&server.transport, &good.transport, "before").await;
    assert_eq!(server.next_message().await.1, "before");
    assert_eq!(good.next_message().await.1, "before");

    // (a) Garbage: a length that fits, then bytes that are no MessagePack at all.
    let garbage = |_: &Bytes| vec![0, 0, 0, 6, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1];
    let (code, reason) = refusal_for(&server.endpoint(), garbage).await;
    assert_eq!(code, RefuseCode::MalformedFrame);
    assert!(reason.starts_with("malformed frame: "), "{reason}");

    // (b) A length prefix of 4 GiB - 1: refused before any body is awaited.
    let (code, reason) = refusal_for(&server.endpoint(), |_| vec![0xff; 4]).await;
    assert_eq!(code, RefuseCode::FrameTooLarge);
    assert!(
        reason.contains("4294967295 bytes") && reason.contains("8388608 bytes"),
        "{reason}"
    );

    // (c) A well-formed Hello whose proof was made with the wrong token.
    let forged = |nonce: &Bytes| {
        let proof = token_proof("wrong", nonce, "forged", "forged-1");
        frame(hello("forged", PROTOCOL_VERSION, Some(proof)))
    };
    let (code, reason) = refusal_for(&server.endpoint(), forged).await;
    assert_eq!(code, RefuseCode::AuthenticationFailed);
    assert!(reason.starts_with("Authentication failed"), "{reason}");

    // (d) A message before the handshake is over.
    let early = Frame::Message {
        subject: "s".into(),
        payload: Bytes::new(),
    };
    let (code, reason) = refusal_for(&server.endpoint(), |_| frame(early)).await;
    assert_eq!(code, RefuseCode::UnexpectedFrame);
    assert!(reason.contains("expected Hello, got Message"), "{reason}");

    exchange(&server.transport, &good.transport, "after").await;
    assert_eq!(server.next_message().await.1, "after");
    assert_eq!(good.next_message().await.1, "after");

    let stats = server.transport.stats();
    for code in [
        RefuseCode::MalformedFrame,
        RefuseCode::FrameTooLarge,
        RefuseCode::AuthenticationFailed,
        RefuseCode::UnexpectedFrame,
    ] {
        assert_eq!(stats.refused_for(code), 1, "{code:?} in {stats:?}");
    }
    assert_eq!((stats.accepted, stats.active_links), (1, 1));
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_cut_with_the_ping_timeout_reason() {
    let mut watchful = config("server", None);
    watchful.ping_interval = Duration::from_millis(50);
    watchful.ping_timeout = Duration::from_millis(300);
    let mut server = start(watchful, true).await;

    let mut silent = raw(&server.endpoint()).await;
    challenge_nonce(&mut silent).await;
    silent
        .send(hello("silent", PROTOCOL_VERSION, None))
        .await
        .unwrap();
    let started = Instant::now();
    let (code, reason) = refusal(&mut silent).await;
    assert_eq!(code, RefuseCode::PingTimeout);
    assert!(reason.contains("stopped answering pings"), "{reason}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    let (network, reason) = server.next_down().await;
    assert_eq!(network, "silent");
    assert!(reason.contains("ping timeout"), "{reason}");
    assert_eq!(
        server
            .transport
            .stats()
            .refused_for(RefuseCode::PingTimeout),
        1
    );
}

#[tokio::test]
async fn a_connection_that_never_says_hello_is_refused_after_the_handshake_timeout() {
    let mut impatient = config("server", None);
    impatient.handshake_timeout = Duration::from_millis(200);
    let server = start(impatient, true).await;
    let mut mute = raw(&server.endpoint()).await;
    let (code, reason) = refusal(&mut mute).await;
    assert_eq!(code, RefuseCode::HandshakeTimeout);
    assert!(reason.contains("no Hello within 200ms"), "{reason}");
}

#[tokio::test]
async fn binding_a_port_in_use_keeps_the_os_words_and_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = taken.local_addr().unwrap();
    let (tx, _rx) = mpsc::channel(1);
    let err = DirectTransport::start(config("server", None), Some(addr), tx)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Bind);
    assert!(err.to_string().contains("Address already in use"), "{err}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[tokio::test]
async fn dialling_a_closed_port_keeps_the_os_words_and_names_the_address() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let client = start(config("client", None), false).await;
    let err = client.transport.connect(&addr).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NetworkDisconnected);
    assert!(err.to_string().contains("Connection refused"), "{err}");
    assert!(err.to_string().contains(&addr), "{err}");
}

#[tokio::test]
async fn connecting_twice_to_one_address_keeps_one_link() {
    let server = start(config("server", None), true).await;
    let client = start(config("client", None), false).await;
    let first = client.transport.connect(&server.endpoint()).await.unwrap();
    let again = client.transport.connect(&server.endpoint()).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(client.transport.peers().len(), 1);
}

#[tokio::test]
async fn disconnect_says_goodbye_and_both_ends_forget_the_link() {
    let mut server = start(config("server", None), true).await;
    let mut client = start(config("client", None), false).await;
    client.transport.connect(&server.endpoint()).await.unwrap();
    client
        .transport
        .publish("server", "s", Bytes::from_static(b"last"))
        .await
        .unwrap();
    client.transport.disconnect("server").await.unwrap();
    assert!(!client.transport.is_linked("server"));

    assert_eq!(
        server.next_message().await.1,
        "last",
        "queued data goes out first"
    );
    let (network, reason) = server.next_down().await;
    assert_eq!(network, "client");
    assert!(
        reason.contains("goodbye") && reason.contains("'client' disconnected"),
        "{reason}"
    );
    assert!(!server.transport.is_linked("client"));
    let (_, reason) = client.next_down().await;
    assert_eq!(reason, "disconnected by this end");

    let err = client
        .transport
        .publish("server", "s", Bytes::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NetworkNotConnected);
    let err = client.transport.disconnect("server").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NetworkNotConnected);
}

#[tokio::test]
async fn shutdown_closes_every_link_and_later_calls_fail() {
    let mut server = start(config("server", None), true).await;
    let a = start(config("a", None), false).await;
    let b = start(config("b", None), false).await;
    a.transport.connect(&server.endpoint()).await.unwrap();
    b.transport.connect(&server.endpoint()).await.unwrap();

    let endpoint = server.endpoint();
    tokio::time::timeout(WAIT, server.transport.shutdown())
        .await
        .expect("shutdown is bounded");
    let mut down = vec![server.next_down().await.0, server.next_down().await.0];
    down.sort();
    assert_eq!(down, ["a", "b"]);
    wait_until("both peers saw the goodbye", || {
        !a.transport.is_linked("server") && !b.transport.is_linked("server")
    })
    .await;

    let err = server
        .transport
        .publish("a", "s", Bytes::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Shutdown);
    let err = a.transport.connect(&endpoint).await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::NetworkDisconnected,
        "the port is closed: {err}"
    );
}

#[tokio::test]
async fn stop_accepting_keeps_existing_links() {
    let mut server = start(config("server", None), true).await;
    let client = start(config("client", None), false).await;
    client.transport.connect(&server.endpoint()).await.unwrap();
    server.transport.stop_accepting();

    let late = start(config("late", None), false).await;
    wait_until("the listener has let go of its port", || {
        std::net::TcpStream::connect(server.endpoint()).is_err()
    })
    .await;
    assert!(late.transport.connect(&server.endpoint()).await.is_err());

    client
        .transport
        .publish("server", "s", Bytes::from_static(b"still here"))
        .await
        .unwrap();
    assert_eq!(server.next_message().await.1, "still here");
}

#[tokio::test]
async fn a_message_over_the_frame_limit_is_refused_naming_both_sizes() {
    let server = start(config("server", None), true).await;
    let mut small = config("client", None);
    small.max_frame_size = 1024;
    let client = start(small, false).await;
    client.transport.connect(&server.endpoint()).await.unwrap();
    let err = client
        .transport
        .publish("server", "s", Bytes::from(vec![0; 4096]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge);
    assert!(
        err.to_string().contains("4097 bytes") && err.to_string().contains("1024"),
        "{err}"
    );
}
