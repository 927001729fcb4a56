//! The HTTP faces of a member: the client API and the peer API.

pub mod form;
pub mod keys_request;
