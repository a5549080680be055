//! Disaster recovery (seed 004 §4): the backup format — a signed manifest, the
//! data snapshot as `.tar.gz`, the keys archive sealed to an age recipient —
//! and the pieces that make and check it, apart from where backups are kept.
#![forbid(unsafe_code)]

pub mod archive;
pub mod backup;
pub mod location;
pub mod manifest;
pub mod s3;
pub mod scratch;
pub mod seal;
mod trial;
pub mod verify;
