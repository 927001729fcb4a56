//! Tier 1: the registry against a real ferrite-store member, in process.

mod agent;
mod api;
mod engine;
mod fleetctl;
mod fleetd;
mod registry;
