//! The engine: elected through a lease in the store, it places units on
//! machines and writes each machine's plan.

pub mod reconcile;
