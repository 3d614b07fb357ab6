//! Benchmarks: load generators and the figures they print. Nothing here asserts; the test
//! suite asserts behaviour, benchmarks report speed.

pub mod audiences;
pub mod destinations;
pub mod e2e;
pub mod export;
pub mod identity_quality;
pub mod ingest;
pub mod shop;
