//! The roads traffic takes between networks.

pub mod direct;
