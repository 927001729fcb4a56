//! Tier 2: three machines (Docker containers with systemd as PID 1 on a
//! network of the test's own), each running ferrite-store and
//! ferrite-fleetd as systemd services, driven with ferrite-fleetctl inside
//! them: fleet's functional scenarios against the real systemd, and the
//! walkthrough's Docker unit on the host's engine, fleetctl's commands over
//! SSH, and fleetd's socket activation and reload.

mod cluster;
mod docker;
mod remote;
mod scenarios;
