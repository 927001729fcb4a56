//! ferrite-cloudinit: a coreos-cloudinit-compatible cloud-config validator
//! and interpreter.
//!
//! User data flows: [`userdata`] (decompress, classify) → [`validate`]
//! (every problem, with its line) → [`substitute`] (`$private_ipv4`) →
//! [`config`] (typed) → [`plan`] (what to change, as data) → [`apply`]
//! (carried out through the [`apply::System`] trait, on a live machine or
//! on a tree with `--root`).

pub mod config;
pub mod decode;
pub mod schema;
pub mod substitute;
pub mod userdata;
pub mod validate;
pub mod yaml;
