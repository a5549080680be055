//! The fixed state the targets check inputs against: a signing key, a JWKS,
//! a nonce key and a real MLS group, made once per process.
use atlas_crypto::dpop::NonceIssuer;
use atlas_crypto::jwk::PublicJwk;
use atlas_crypto::jws::JwsSigner;
use atlas_crypto::mls::MlsDevice;
use atlas_crypto::mls_ds::DsGroup;
use atlas_crypto::receipt::{ReceiptSigner, published_jwk};
use atlas_proto::{DeviceId, UserId};
use serde_json::{Value, json};
use std::sync::OnceLock;

/// The request URL proofs are checked against.
pub const HTU: &str = "https://atlas.test/messages";
/// The access token proofs are bound to.
pub const TOKEN: &str = "fuzz-access-token";
/// The time every check runs at (2026-11-29T00:00:00Z).
pub const NOW: i64 = 1_795_996_800;
/// The receipt key's id.
pub const RECEIPT_KID: &str = "fuzz-receipt-key";

/// Made once; every field is what a server would hold.
pub struct Fixtures {
    /// The key DPoP proofs and tokens are signed with in the seeds.
    pub signer: JwsSigner,
    /// Its public JWK, which `jws` verifies against.
    pub jwk: PublicJwk,
    /// The receipt signing key.
    pub receipts: ReceiptSigner,
    /// The JWKS publishing it.
    pub jwks: Value,
    /// The server's nonce key.
    pub nonces: NonceIssuer,
    /// A member device of `group`.
    pub device: MlsDevice,
    /// The delivery service's state of a one-member group, as `DsGroup::snapshot` writes it.
    pub group: Vec<u8>,
}

/// The fixtures, made on first use.
pub fn get() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(make)
}

#[expect(
    clippy::expect_used,
    reason = "a fuzz harness that cannot build its fixtures must stop at once"
)]
fn make() -> Fixtures {
    let signer = JwsSigner::generate_ed25519();
    let jwk = signer.public_jwk();
    let seed = [7u8; 32];
    let receipts = ReceiptSigner::new(RECEIPT_KID, &seed).expect("receipt key");
    let jwks = json!({ "keys": [published_jwk(RECEIPT_KID, &seed).expect("jwk")] });
    let user = UserId::new("alice").expect("user id");
    let device_id = DeviceId::new("FUZZ").expect("device id");
    let device = MlsDevice::new(&user, &device_id).expect("mls device");
    let info = device.create_group("fuzz").expect("group");
    let group = DsGroup::from_group_info("fuzz", &info)
        .and_then(|g| g.snapshot())
        .expect("ds group");
    Fixtures {
        signer,
        jwk,
        receipts,
        jwks,
        nonces: NonceIssuer::new([9u8; 32], 300),
        device,
        group,
    }
}
