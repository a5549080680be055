//! The end-to-end tests of `atlas`: servers, clients and the CLI together, one
//! test binary with a module per area (the kit is `atlas_testing`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)] // Tests fail loudly on purpose.

#[macro_use]
extern crate atlas_testing;

mod alerts;
mod audit;
mod backup;
mod bad_input;
mod cli;
mod conversation;
mod diagnose;
mod dr;
mod durability;
mod e2ee_health;
mod emergency;
mod groups;
mod hardening;
mod identity_revocation;
mod incidents;
mod indicators;
mod k8s_scripts;
mod receipts;
mod recovery_drill;
mod repair;
mod replicas;
mod rollback;
mod status_page;
