//! fleet's model of cluster scheduling, kept in an etcd v2 store.
//!
//! Units are systemd unit files with an optional `[X-Fleet]` section of
//! placement requirements. An engine, elected through a lease in the store,
//! places each unit on an eligible machine; an agent on every machine makes
//! systemd run what was placed there and publishes what systemd reports.
//!
//! Pure parts first: [`unit_file`] (fleet's unit file lexer, serialisation
//! and hash), [`unit_name`] (names, templates and specifiers), [`job`]
//! (`[X-Fleet]` requirements and their validation) and [`glob`] (Go's
//! `path.Match`, which `Conflicts=` and `Replaces=` use).

pub mod agent;
pub mod api;
pub mod config;
pub mod engine;
pub mod fleetctl;
pub mod fleetd;
pub mod glob;
pub mod job;
pub mod page;
pub mod placement;
pub mod registry;
pub mod schema;
pub mod table;
pub mod unit_file;
pub mod unit_name;
