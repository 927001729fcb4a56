//! Consensus: openraft's types, the durable log, the state machine around
//! the v2 store, and the peer network.

pub mod log_store;
pub mod types;
pub mod network;
