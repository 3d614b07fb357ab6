//! Benchmarks: load generators and the figures they print. Nothing here asserts; the test
//! suite asserts behaviour, benchmarks report speed.

pub mod ingest;
pub mod shop;
