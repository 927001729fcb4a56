//! Tier 1: fixtures through the library and the binary, offline applies to
//! temporary trees, datasources faked on loopback.

mod apply;
mod datasource;
mod https;
mod validate;
