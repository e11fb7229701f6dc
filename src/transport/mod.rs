//! The roads traffic takes between networks: [`nats`] through the broker, and (with the
//! direct-link fallback) TCP links between networks.

pub mod nats;
