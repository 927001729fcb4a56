//! Tier 2: three machines (Docker containers with systemd as PID 1 on a
//! network of the test's own), each running ferrite-store and
//! ferrite-fleetd as systemd services, driven with ferrite-fleetctl inside
//! them: fleet's functional scenarios against the real systemd.

mod cluster;
mod scenarios;
