//! One conformance suite, run against SQLite and against PostgreSQL (each test
//! in its own fresh database), one module per storage area.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)] // Tests fail loudly on purpose.

use atlas_crypto::olm::OlmAccount;
use atlas_proto::api::{DeviceKeys, KeysUploadRequest, OutgoingEnvelope, PublicKey};
use atlas_proto::receipt::ReceiptType;
use atlas_proto::{DeviceId, UserId};
use atlas_store::testdb::{TempDir, TempPostgres};
use atlas_store::{
    AckedMessage, ClaimKind, CommitOutcome, KeyPackageCounts, NewCommit, NewGroup, NewIdentity,
    NewKeyPackage, NewMessage, NewReport, ReceiptRecord, RefreshTokenRecord, RefreshUse,
    ReportChange, ServerKeyRecord, ServerKeyState, Store, StoreError,
};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

enum Db {
    Sqlite(TempDir),
    Postgres(TempPostgres),
}

impl Db {
    async fn sqlite() -> Self {
        Db::Sqlite(TempDir::new("atlas-store-test").unwrap())
    }
    async fn postgres() -> Self {
        Db::Postgres(
            TempPostgres::create()
                .await
                .expect("PostgreSQL at 127.0.0.1:5432 (set ATLAS_TEST_POSTGRES_URL)"),
        )
    }
    fn url(&self) -> String {
        match self {
            Db::Sqlite(dir) => dir.sqlite_url("atlas.db"),
            Db::Postgres(pg) => pg.url.clone(),
        }
    }
    async fn open(&self) -> Arc<dyn Store> {
        atlas_store::open(&self.url()).await.unwrap()
    }
}

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}
fn did(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}
fn now() -> OffsetDateTime {
    // Whole microseconds, as PostgreSQL stores them, so round trips compare equal.
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1000 * 1000).unwrap()
}
fn keys(user: &str, device: &str) -> DeviceKeys {
    OlmAccount::new().device_keys(&uid(user), &did(device))
}
/// The store keeps identity keys and certificates as given (the server checks them).
const IDENTITY: NewIdentity<'static> = NewIdentity {
    identity_key: "identity-key",
    certificate: "certificate",
};
async fn add_user(store: &Arc<dyn Store>, user: &str, device: &str) {
    store
        .create_user(&uid(user), &keys(user, device), &IDENTITY, now())
        .await
        .unwrap();
}
fn envelope(device: &str, body: &str) -> OutgoingEnvelope {
    OutgoingEnvelope {
        device_id: did(device),
        msg_type: 1,
        body: body.into(),
        session_id: None,
    }
}
fn send(from: &str, to: &str, client_id: &str, envelopes: Vec<OutgoingEnvelope>) -> NewMessage {
    NewMessage {
        message_id: format!("m-{client_id}").parse().unwrap(),
        sender_id: uid(from),
        sender_device_id: did("D1"),
        recipient_id: uid(to),
        client_message_id: client_id.parse().unwrap(),
        request_hash: client_id.as_bytes().to_vec(),
        encryption_algorithm: "m.olm.v1.curve25519-aes-sha2".into(),
        envelopes,
        untrusted_devices: vec![],
        queue_limit: 10_000,
        proof_id: None,
        resend_of: None,
        prekey_keys: vec![],
        now: now(),
        receipt: receipt(&format!("m-{client_id}"), from, to, None),
    }
}
fn receipt(message_id: &str, from: &str, to: &str, device: Option<&str>) -> ReceiptRecord {
    let kind = if device.is_some() {
        ReceiptType::Delivered
    } else {
        ReceiptType::Accepted
    };
    ReceiptRecord {
        receipt_id: format!("r-{message_id}-{}", device.unwrap_or("")),
        message_id: message_id.parse().unwrap(),
        receipt_type: kind,
        device_id: device.map(did),
        sender_id: uid(from),
        recipient_id: uid(to),
        kid: "k1".into(),
        jws: format!("{{\"signed\":\"{message_id}\"}}"),
        issued_at: now(),
        expires_at: now() + Duration::days(30),
    }
}
/// Builds the delivered receipt of each acknowledged message, as the server does.
fn delivered(device: &'static str) -> impl Fn(&AckedMessage) -> ReceiptRecord + Send + Sync {
    move |m| receipt(&m.message_id, m.sender_id.as_str(), "carol", Some(device))
}

/// One test per backend for each named test function of the calling module.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(crate::Db::sqlite().await).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(crate::Db::postgres().await).await } )*
        }
    };
}

mod accounts;
mod audit;
mod backups;
mod dr;
mod groups;
mod identities;
mod incidents;
mod messages;
mod migrations;
mod prekeys;
mod probes;
mod repair;
mod reports;
mod runbook;
mod tokens;
