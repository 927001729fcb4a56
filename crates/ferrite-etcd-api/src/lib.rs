//! The etcd API's wire shapes, written once and shared.
//!
//! `ferrite-store` serves these shapes and every client in Ferrite (the
//! scheduler, the sidekicks, discovery, the reboot lock, the tests) reads
//! them, so a field renamed here is renamed everywhere. The shapes follow
//! etcd 3.4 with `--enable-v2`, field for field and in etcd's field order,
//! because operators point the real `etcdctl` at Ferrite and compare.

pub mod v2;
