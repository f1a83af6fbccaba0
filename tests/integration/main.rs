//! End-to-end tests of the real `lakeshare` binary, driven by `object_store` (the S3 client
//! delta-rs uses) over HTTP on an ephemeral port with temp drives.
//!
//! One integration binary with a module per topic; `server` starts and stops the node.
//! Invariant: every test starts its own node on fresh drives, so tests share no state.

mod commit_race;
mod round_trip;
mod server;
