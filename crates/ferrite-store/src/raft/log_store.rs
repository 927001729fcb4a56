//! The durable raft log. (Implementation in progress.)
