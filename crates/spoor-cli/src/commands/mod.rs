//! One module per subcommand.

pub mod admin;
pub mod audiences;
pub mod bench;
pub mod demo;
pub mod destinations;
pub mod erasure;
pub mod export;
pub mod import;
pub mod privacy;
pub mod serve;
pub mod state;
pub mod users;
