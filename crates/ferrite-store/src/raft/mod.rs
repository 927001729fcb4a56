//! Consensus: openraft's types, the durable log, the state machine around
//! the v2 store, and the peer network.

pub mod durability;
mod durable;
pub mod election;
pub mod log_store;
pub mod network;
pub mod state_machine;
#[cfg(test)]
mod storage_suite;
pub mod stream;
pub mod types;

pub use durable::OpenError;
