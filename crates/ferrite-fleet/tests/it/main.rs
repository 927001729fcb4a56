//! Tier 1: the registry against a real ferrite-store member, in process.

mod engine;
mod registry;
mod store;
