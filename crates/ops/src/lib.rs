//! Operator logic shared by the server and the CLI, free of I/O: the
//! runbook's Systematic Diagnosis Flow as functions from evidence (gathered
//! from storage by the caller) to a [`atlas_proto::diagnose::Diagnosis`], and
//! the incident lifecycle of the emergency manual as a state machine.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod diagnose;
pub mod incident;
pub mod indicators;
pub mod notify;
pub mod postmortem;
pub mod status;
