//! The acknowledgement protocol as a whole, with no server: a sender's [`SendWindow`]
//! streams to a network of two instances, each with its own [`Ledger`], over a broker
//! that loses, repeats and reorders envelopes and acknowledgements, while one instance
//! may crash. Whatever the interleaving, every message is handled, and the instance that
//! stays up never handles one twice.

use std::time::{Duration, Instant};

use async_nats::Subject;
use bytes::Bytes;
use proptest::prelude::*;

use super::ledger::{Arrival, Ledger};
use super::window::{Kept, SendWindow};
use crate::events::TransportKind;
use crate::network::Causes;

const SENDER: (&str, &str) = ("A", "a-1");
const NAMES: [&str; 2] = ["b-0", "b-1"];

/// One envelope on the wire: its number, the floor it tells, and where the broker
/// takes it.
#[derive(Clone, Debug)]
struct Wire {
    seq: u64,
    floor: u64,
    to: usize,
}

/// One acknowledgement on the wire.
#[derive(Clone, Debug)]
struct AckWire {
    from: usize,
    handled: Vec<(u64, u64)>,
    accepted: Vec<(u64, u64)>,
}

struct World {
    window: SendWindow,
    next: u64,
    total: u64,
    instances: [Ledger; 2],
    alive: [bool; 2],
    data: Vec<Wire>,
    acks: Vec<AckWire>,
    /// Delivered and not yet handled, per instance.
    handling: [Vec<u64>; 2],
    /// Envelopes held back after a gap, per instance.
    held: [Vec<Wire>; 2],
    handled_by: [Vec<u32>; 2],
    /// A cursor into the choices, so the broker's picks are reproducible.
    pick: usize,
}

impl World {
    fn new(total: u64) -> World {
        World {
            window: SendWindow::new(usize::MAX),
            next: 0,
            total,
            instances: [Ledger::default(), Ledger::default()],
            alive: [true, true],
            data: Vec::new(),
            acks: Vec::new(),
            handling: [Vec::new(), Vec::new()],
            held: [Vec::new(), Vec::new()],
            handled_by: [vec![0; total as usize], vec![0; total as usize]],
            pick: 0,
        }
    }

    fn choose(&mut self, len: usize, salt: u8) -> usize {
        self.pick = self.pick.wrapping_mul(31).wrapping_add(salt as usize + 7);
        self.pick % len.max(1)
    }

    /// The broker picks a live member of the queue group.
    fn route(&mut self, salt: u8) -> usize {
        let live: Vec<usize> = (0..2).filter(|i| self.alive[*i]).collect();
        live[self.choose(live.len(), salt)]
    }

    fn send(&mut self, salt: u8) {
        if self.next >= self.total || !self.window.has_room() {
            return;
        }
        let seq = self.next;
        self.next += 1;
        let kept = Kept {
            subject: Subject::from("B.t.in"),
            plain: Bytes::from_static(b"x"),
        };
        // Kept before it is published, as the stream does.
        self.window.keep(seq, 1, kept, Causes::default());
        let floor = self.window.floor(self.next);
        let to = self.route(salt);
        self.data.push(Wire { seq, floor, to });
    }

    fn resend(&mut self, now: Instant, salt: u8) {
        for (seq, _) in self.window.due(now) {
            let floor = self.window.floor(self.next);
            let to = self.route(salt);
            self.data.push(Wire { seq, floor, to });
        }
    }

    fn arrive(&mut self, wire: Wire) {
        let to = wire.to;
        if !self.alive[to] {
            return;
        }
        let alone = !self.alive[1 - to];
        let arrival = self.instances[to].arrive(
            SENDER,
            (wire.seq, wire.seq),
            Some(wire.floor),
            (1, TransportKind::Nats),
            || alone,
        );
        match arrival {
            Arrival::Fresh => self.handling[to].push(wire.seq),
            Arrival::Hold => self.held[to].push(wire),
            Arrival::Repeat => {}
            Arrival::Partly(_) => unreachable!("single messages"),
        }
    }

    /// What an instance holds back goes again through its dispatcher once its gap may
    /// have filled.
    fn release(&mut self, instance: usize) {
        let held = std::mem::take(&mut self.held[instance]);
        for wire in held {
            if self.instances[instance].gap_before(SENDER, wire.seq) {
                self.held[instance].push(wire);
            } else {
                self.arrive(wire);
            }
        }
    }

    fn handle_one(&mut self, instance: usize, salt: u8) {
        if !self.alive[instance] || self.handling[instance].is_empty() {
            return;
        }
        let index = self.choose(self.handling[instance].len(), salt);
        let seq = self.handling[instance].swap_remove(index);
        self.handled_by[instance][seq as usize] += 1;
        self.instances[instance].complete(SENDER, (seq, seq), (1, TransportKind::Nats), true);
    }

    fn flush_acks(&mut self, instance: usize) {
        if !self.alive[instance] {
            return;
        }
        for notice in self.instances[instance].take_owed() {
            self.acks.push(AckWire {
                from: instance,
                handled: notice.handled,
                accepted: notice.accepted,
            });
        }
    }

    fn take_ack(&mut self, index: usize) {
        let ack = self.acks.remove(index);
        self.window
            .acknowledge(NAMES[ack.from], &ack.handled, &ack.accepted);
    }

    fn crash(&mut self, instance: usize) {
        if !self.alive[instance] || !self.alive[1 - instance] {
            return;
        }
        self.alive[instance] = false;
        self.handling[instance].clear();
        self.held[instance].clear();
        self.data.retain(|w| w.to != instance);
        self.acks.retain(|a| a.from != instance);
        // Its liveness entry expires: what it held goes again.
        self.window.instance_gone(NAMES[instance]);
        // In-flight envelopes the broker had routed to it are gone with it.
    }

    fn step(&mut self, op: u8, salt: u8, later: Instant) {
        match op % 10 {
            0 | 1 => self.send(salt),
            2 if !self.data.is_empty() => {
                let index = self.choose(self.data.len(), salt);
                let wire = self.data.remove(index);
                self.arrive(wire);
                self.release(0);
                self.release(1);
            }
            3 if !self.data.is_empty() => {
                let index = self.choose(self.data.len(), salt);
                self.data.remove(index); // lost
            }
            4 if !self.data.is_empty() => {
                let index = self.choose(self.data.len(), salt);
                let copy = self.data[index].clone();
                self.data.push(copy); // repeated
            }
            5 => self.handle_one((salt % 2) as usize, salt),
            6 => self.flush_acks((salt % 2) as usize),
            7 if !self.acks.is_empty() => {
                let index = self.choose(self.acks.len(), salt);
                if salt.is_multiple_of(4) {
                    self.acks.remove(index); // lost
                } else {
                    self.take_ack(index);
                }
            }
            8 => self.resend(later, salt),
            _ => {}
        }
    }

    /// The broker behaves from now on: everything is delivered, handled and
    /// acknowledged, and the sender sends again what it must, until it is done.
    fn settle(&mut self, mut later: Instant) -> bool {
        for _ in 0..200 {
            while self.next < self.total && self.window.has_room() {
                self.send(1);
            }
            while let Some(wire) = self.data.pop() {
                self.arrive(wire);
            }
            for instance in 0..2 {
                self.release(instance);
                while !self.handling[instance].is_empty() {
                    self.handle_one(instance, 0);
                }
                self.flush_acks(instance);
            }
            while !self.acks.is_empty() {
                self.take_ack(0);
            }
            if self.next >= self.total && self.window.unacked_count() == 0 {
                return true;
            }
            later += Duration::from_secs(300);
            self.resend(later, 3);
        }
        false
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_loss_repetition_reordering_and_crash_delivers_every_message(
        ops in prop::collection::vec((0u8..10, any::<u8>()), 0..400),
        crash_at in prop::option::of(0usize..400),
    ) {
        let total = 40;
        let mut world = World::new(total);
        let later = Instant::now() + Duration::from_secs(120);
        for (step, (op, salt)) in ops.into_iter().enumerate() {
            if crash_at == Some(step) {
                world.crash(1);
            }
            world.step(op, salt, later);
        }
        prop_assert!(
            world.settle(later),
            "the stream never finished: {} unhandled; alive {:?}; held {:?}; window {:?}",
            world.window.unacked_count(),
            world.alive,
            world.held,
            world.window
        );
        for seq in 0..total as usize {
            let (here, there) = (world.handled_by[0][seq], world.handled_by[1][seq]);
            prop_assert!(here + there >= 1, "{} was never handled", seq);
            prop_assert!(here <= 1, "the instance that stayed up handled {} twice", seq);
            if world.alive[1] {
                prop_assert!(there <= 1, "{} handled twice at an instance that stayed up", seq);
            }
        }
    }
}
