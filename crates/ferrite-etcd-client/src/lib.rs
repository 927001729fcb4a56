//! The one etcd v2 client of Ferrite.
//!
//! Everything in Ferrite that keeps state in the cluster (the scheduler, the
//! registrator and ambassador, the reboot lock, discovery, the tests) talks
//! to the store through this crate, so it works the same against
//! `ferrite-store` and a real etcd 3.4 with `--enable-v2`. The JSON shapes
//! are those of [`ferrite_etcd_api::v2`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferrite_etcd_client::Error> {
//! use ferrite_etcd_api::v2::ErrorCode;
//! use ferrite_etcd_client::{Client, GetOptions};
//!
//! let etcd = Client::new(["http://127.0.0.1:2379", "http://127.0.0.1:22379"])?;
//! etcd.set("/message", "hello", &Default::default()).await?;
//! match etcd.get("/missing", &GetOptions::default()).await {
//!     Err(e) if e.is(ErrorCode::KeyNotFound) => {}
//!     other => panic!("{other:?}"),
//! }
//! # Ok(()) }
//! ```
//!
//! The crate does no I/O but HTTP to the endpoints it is given, and never
//! through a proxy from the environment.

mod client;
pub mod discovery;
mod error;
mod keys;
mod members;
mod watch;

pub use client::{Client, ClientBuilder, EtcdHeaders, Response, KEYS_PREFIX};
pub use error::Error;
pub use keys::{DeleteOptions, GetOptions, SetOptions, WatchOptions};
pub use members::Health;
pub use watch::WatchEvent;

#[cfg(test)]
mod fake_server;
