//! `ferrite-store`: an etcd-compatible key-value store on raft.
//!
//! The v2 keys API is served exactly as etcd 3.4 serves it with
//! `--enable-v2`, so the real `etcdctl` and every etcd v2 client work
//! unchanged. Consensus is openraft; the log and the state machine are ours.
//!
//! Layers, bottom up:
//! - [`v2store`]: the v2 key space as a pure, deterministic state machine
//!   (tree, TTLs, event history, watchers). No I/O, no clocks of its own.
//! - [`raft`]: openraft's types, the durable log, the state machine that
//!   wraps the v2 store, and the peer network.
//! - [`http`]: the client API (keys, members, stats, version, health,
//!   metrics) and the peer API.
//! - [`config`]: etcd's flags and `ETCD_*` environment, validated.

pub mod batch;
pub mod config;
pub mod forwarder;
pub mod histogram;
pub mod http;
pub mod ids;
pub mod node;
pub mod proposer;
pub mod raft;
pub mod server;
#[cfg(feature = "testing")]
pub mod testing;
pub mod v2store;
