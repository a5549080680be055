//! The test kit of Atlas's end-to-end tests and benchmarks: the harness
//! (server, database, clock), raw devices, the `atlas` binary as a command
//! and a server, fault injection, and the both-backends macro.
#![forbid(unsafe_code)]
// A test kit: fails loudly on purpose, and its helpers document themselves by name.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

mod cli;
mod clock;
mod faults;
mod harness;
mod observe;
mod proxy;
mod raw;
mod s3;
mod webhook;

pub use cli::*;
pub use clock::*;
pub use faults::*;
pub use harness::*;
pub use observe::*;
pub use proxy::*;
pub use raw::*;
pub use s3::*;
pub use webhook::*;

/// Declares each test once for SQLite and once for PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name($crate::Harness::sqlite().await).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name($crate::Harness::postgres().await).await } )*
        }
    };
}
