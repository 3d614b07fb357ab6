//! The server's integration tests: one binary, a real server on 127.0.0.1:0 per test.

mod activation;
mod admin;
mod audiences;
mod bad_input;
mod common;
mod destinations;
#[path = "../support/drop_schema.rs"]
mod drop_schema;
mod erasure;
mod exports;
mod fixtures;
mod ingest;
mod memberships;
mod privacy;
mod profiles;
mod receiver;
mod retention;
mod sinks;
mod tls;
mod ui;
mod ui_overview;
mod ui_preview;
mod ui_users;
