use super::*;
use crate::network::Cause;
use std::sync::atomic::{AtomicU8, Ordering};

fn kept(tag: u8) -> Kept {
    Kept {
        subject: Subject::from("a.b.c"),
        plain: Bytes::from(vec![tag; 5]),
    }
}

fn window_with(max_bytes: usize, envelopes: &[(u64, usize)]) -> SendWindow {
    let window = SendWindow::new(max_bytes);
    for &(first, count) in envelopes {
        window.keep(first, count, kept(first as u8), Causes::default());
    }
    window
}

fn firsts(due: &[(u64, Kept)]) -> Vec<u64> {
    due.iter().map(|(first, _)| *first).collect()
}

/// Moves everything the window remembers `by` into the past.
fn age(window: &SendWindow, by: Duration) {
    let mut state = window.state.lock();
    state.progress -= by;
    state.probed = state.probed.map(|at| at - by);
    for sent in &mut state.sent {
        sent.sent_at -= by;
    }
}

#[test]
fn handled_envelopes_free_room_in_any_order() {
    // 10 bytes each (5 of payload, 5 of subject): two fit under 25, three do not.
    let window = window_with(25, &[(10, 1), (11, 3), (14, 1)]);
    assert!(!window.has_room());
    assert_eq!(window.floor(15), 10);
    assert_eq!(window.acknowledge("b-1", &[(11, 14)], &[]), 2);
    assert!(window.has_room());
    assert_eq!(window.floor(15), 10, "the oldest is still unhandled");
    assert_eq!(window.acknowledge("b-1", &[(10, 10)], &[]), 1);
    assert_eq!(
        window.floor(15),
        15,
        "all handled: the floor is the next number"
    );
    assert!(
        window.retransmit_at().is_none(),
        "nothing left to send again"
    );
}

#[test]
fn a_range_covering_part_of_a_batch_does_not_acknowledge_it() {
    let window = window_with(1 << 20, &[(20, 4)]);
    assert_eq!(window.acknowledge("b", &[(20, 22)], &[]), 0);
    assert_eq!(window.acknowledge("b", &[(20, 22), (23, 23)], &[]), 0);
    assert_eq!(window.acknowledge("b", &[(19, 30)], &[]), 1);
    assert_eq!(
        window.acknowledge("b", &[(19, 30)], &[]),
        0,
        "a repeat changes nothing"
    );
}

#[test]
fn one_envelope_always_fits_and_the_count_bound_holds_for_small_ones() {
    let window = SendWindow::new(1);
    assert!(window.has_room());
    window.keep(1, 1, kept(0), Causes::default());
    assert!(!window.has_room());

    let window = SendWindow::new(usize::MAX);
    for seq in 0..MAX_UNACKED as u64 {
        assert!(window.has_room());
        window.keep(seq, 1, kept(0), Causes::default());
    }
    assert!(!window.has_room());
}

#[test]
fn an_acknowledgement_that_beats_the_send_is_not_lost() {
    // The stream keeps an envelope before it publishes it: an acknowledgement that
    // arrives before the publish call returns finds it.
    let window = SendWindow::new(1 << 20);
    window.keep(1, 1, kept(1), Causes::default());
    assert_eq!(window.acknowledge("b", &[(1, 1)], &[]), 1);
    age(&window, Duration::from_secs(60));
    assert!(
        window.due(Instant::now()).is_empty(),
        "nothing is sent again"
    );
}

#[test]
fn an_envelope_is_sent_again_only_once_overtaken_and_overdue() {
    let window = window_with(1 << 20, &[(1, 1), (2, 1)]);
    age(&window, Duration::from_millis(1100));
    window.keep(3, 1, kept(3), Causes::default());
    // 3 is heard of: 1 and 2, sent before it and long unheard of, were lost.
    window.acknowledge("b", &[], &[(3, 3)]);
    let now = Instant::now();
    assert!(window.retransmit_at().unwrap() <= now);
    assert_eq!(firsts(&window.due(now)), [1, 2]);
    assert!(window.due(now).is_empty(), "they count as just sent");
    assert_eq!(window.resent_count(), 2);
}

#[test]
fn a_slow_receiver_that_holds_everything_gets_nothing_twice() {
    // The receiver accepts all at once and handles one every two seconds: however long
    // that takes, nothing is overtaken or orphaned, and it is never silent.
    let window = window_with(1 << 20, &[(1, 1), (2, 1), (3, 1), (4, 1)]);
    window.acknowledge("b", &[], &[(1, 4)]);
    for n in 1..=4 {
        age(&window, Duration::from_secs(2));
        window.acknowledge("b", &[(n, n)], &[]);
        assert!(window.due(Instant::now()).is_empty(), "after {n}");
    }
    assert_eq!(window.resent_count(), 0);
}

#[test]
fn the_oldest_held_too_long_goes_again_in_case_its_acknowledgement_was_lost() {
    let window = window_with(1 << 20, &[(1, 1), (2, 1)]);
    window.acknowledge("b", &[], &[(1, 2)]);
    // Heard of recently, so not silent; but the oldest has been held for long.
    age(
        &window,
        RETRANSMIT_AFTER * HELD_PATIENCE + Duration::from_millis(10),
    );
    window.acknowledge("b", &[], &[(1, 2)]);
    let due = window.due(Instant::now());
    assert_eq!(firsts(&due), [1], "only the oldest");
    assert!(
        window.due(Instant::now()).is_empty(),
        "and not again at once"
    );
}

#[test]
fn a_queued_envelope_behind_a_slow_actor_is_not_sent_again() {
    // 1 is held; 2 and 3 wait unread in the receiver's buffer, in order: nothing after
    // them was heard of, so they are not overtaken, and handled acknowledgements keep
    // the receiver from counting as silent.
    let window = window_with(1 << 20, &[(1, 1), (2, 1), (3, 1)]);
    window.acknowledge("b", &[], &[(1, 1)]);
    age(&window, Duration::from_secs(10));
    window.acknowledge("b", &[(1, 1)], &[]);
    assert!(window.due(Instant::now()).is_empty());
}

#[test]
fn what_a_dead_instance_held_goes_again_at_once() {
    let window = window_with(1 << 20, &[(1, 1), (2, 1), (3, 1)]);
    window.acknowledge("b-1", &[], &[(1, 1), (3, 3)]);
    window.acknowledge("b-2", &[], &[(2, 2)]);
    assert!(window.due(Instant::now()).is_empty());
    assert_eq!(window.instance_gone("b-1"), 2);
    let now = Instant::now();
    assert!(window.retransmit_at().unwrap() <= now);
    assert_eq!(firsts(&window.due(now)), [1, 3]);
    assert_eq!(window.instance_gone("b-3"), 0, "held by nobody else");
}

#[test]
fn a_silent_receiver_gets_only_the_oldest_at_growing_intervals_then_the_rest() {
    let window = window_with(1 << 20, &[(1, 1), (2, 1), (3, 1)]);
    age(&window, Duration::from_millis(1100));
    let now = Instant::now();
    // Overdue and silent: a probe, not the whole window.
    assert_eq!(firsts(&window.due(now)), [1]);
    let next = window.retransmit_at().unwrap();
    assert!(next - now >= RETRANSMIT_AFTER * 2, "{:?}", next - now);
    assert!(window.due(now).is_empty());
    age(&window, RETRANSMIT_AFTER * 2);
    let now = Instant::now();
    assert_eq!(firsts(&window.due(now)), [1]);
    // The receiver answers the probe: the others were sent before it went again, so
    // they are overtaken and long overdue.
    window.acknowledge("b", &[(1, 1)], &[]);
    let now = Instant::now();
    assert!(window.retransmit_at().unwrap() <= now, "due at once");
    assert_eq!(firsts(&window.due(now)), [2, 3]);
}

#[test]
fn an_appearing_instance_is_probed_at_once() {
    let window = window_with(1 << 20, &[(1, 1)]);
    age(&window, Duration::from_millis(1100));
    assert_eq!(firsts(&window.due(Instant::now())), [1]);
    assert!(window.due(Instant::now()).is_empty(), "backed off");
    window.instance_appeared();
    assert_eq!(firsts(&window.due(Instant::now())), [1]);
}

#[test]
fn slow_first_hearing_stretches_the_timeout() {
    let window = window_with(1 << 20, &[(1, 1)]);
    age(&window, Duration::from_secs(2));
    window.acknowledge("b", &[(1, 1)], &[]);
    assert!(window.state.lock().timeout() >= Duration::from_secs(2));
}

#[test]
fn causes_are_released_when_handled_and_abandoned_when_the_window_goes() {
    let outcome = Arc::new(AtomicU8::new(0));
    let causes = |outcome: &Arc<AtomicU8>| {
        let seen = outcome.clone();
        let cause = Cause::new(false, move |handled| {
            seen.store(if handled { 1 } else { 2 }, Ordering::SeqCst);
        });
        let mut causes = Causes::default();
        causes.add(Some(&cause));
        causes
    };
    let window = SendWindow::new(1 << 20);
    window.keep(1, 1, kept(1), causes(&outcome));
    window.acknowledge("b", &[], &[(1, 1)]);
    assert_eq!(outcome.load(Ordering::SeqCst), 0, "accepted is not handled");
    window.acknowledge("b", &[(1, 1)], &[]);
    assert_eq!(outcome.load(Ordering::SeqCst), 1);

    let dropped = Arc::new(AtomicU8::new(0));
    let window = SendWindow::new(1 << 20);
    window.keep(1, 1, kept(1), causes(&dropped));
    drop(window);
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        2,
        "never handled downstream"
    );
}

#[test]
fn returns_to_a_dead_instance_are_given_up_and_free_room() {
    let window = SendWindow::new(1 << 20);
    let to = |subject: &str| Kept {
        subject: Subject::from(subject.to_string()),
        plain: Bytes::from_static(b"x"),
    };
    window.keep(1, 1, to("_reflow.A.a-1.ret.t1.out"), Causes::default());
    window.keep(2, 1, to("_reflow.A.a-2.ret.t2.out"), Causes::default());
    window.keep(3, 1, to("_reflow.A.a-1.ret.t1.out"), Causes::default());
    assert_eq!(window.give_up_on("_reflow.A.a-1.ret."), 2);
    assert_eq!(window.unacked_count(), 1);
    assert_eq!(window.floor(4), 2);
    assert_eq!(window.give_up_on("_reflow.A.a-1.ret."), 0);
}
