//! System tier of ferrite-store: real etcd as the oracle, real etcdctl as
//! the client. Run with
//! `FERRITE_CONFORMANCE_SUBJECT=etcd cargo test -p ferrite-store --features system-tests --test system`
//! to prove the harness against a second etcd; without the variable the
//! subject is ferrite-store.

mod cluster;
mod conformance;
mod disk;
mod etcdctl;
mod faults;
mod normalise;
mod servers;
