//! Verifies a receipt against a JWKS for `atlas verify-receipt`: every check
//! runs and reports its evidence, and the first failure names the reason.
use crate::checks::Check;
use crate::jwk::PublicJwk;
use crate::receipt::{ReceiptForm, decode_receipt};
use atlas_proto::b64;
use atlas_proto::receipt::{FlattenedJws, ReceiptClaims, ReceiptType};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

/// How far a timestamp may lie in the future (clock skew between server and verifier).
pub const CLOCK_SKEW_SECONDS: i64 = 300;

/// Everything `verify-receipt` prints.
#[derive(Debug, Clone, Serialize)]
pub struct ReceiptReport {
    /// True when every check passed.
    pub ok: bool,
    /// The signing key id, if the receipt decoded.
    pub kid: Option<String>,
    /// The protected header, if it decoded.
    pub header: Option<Value>,
    /// The claims, if they decoded.
    pub claims: Option<ReceiptClaims>,
    /// The checks, in order.
    pub checks: Vec<Check>,
}

impl ReceiptReport {
    /// The first failed check, as "name: detail".
    pub fn failure(&self) -> Option<String> {
        self.checks
            .iter()
            .find(|c| c.ok == Some(false))
            .map(|c| format!("{}: {}", c.name, c.detail))
    }
}

/// Checks a receipt (its JSON or base64) against `jwks` at Unix time `now`.
pub fn verify_receipt(input: &str, jwks: &Value, now: i64) -> ReceiptReport {
    let mut report = ReceiptReport {
        ok: false,
        kid: None,
        header: None,
        claims: None,
        checks: Vec::new(),
    };
    let jws = match decode_receipt(input) {
        Ok((jws, form)) => {
            let shape = match form {
                ReceiptForm::Json => "flattened JWS JSON",
                ReceiptForm::Base64 => "base64 of flattened JWS JSON",
            };
            report.checks.push(Check::ran("structure", true, shape));
            jws
        }
        Err(e) => {
            report
                .checks
                .push(Check::ran("structure", false, e.to_string()));
            return report;
        }
    };
    report.kid = Some(jws.header.kid.clone());
    let header_ok = check_header(&jws, &mut report);
    let claims = check_claims(&jws, &mut report);
    let key = check_kid(&jws.header.kid, jwks, &mut report);
    if let (true, Some(key)) = (header_ok, key) {
        let input = format!("{}.{}", jws.protected, jws.payload);
        let verdict = b64::decode(&jws.signature)
            .map_err(|_| "signature is not base64url".to_owned())
            .and_then(|sig| {
                crate::jws::verify_raw(&key, input.as_bytes(), &sig).map_err(|_| {
                    "does not verify: the receipt was altered or signed by another key".to_owned()
                })
            });
        report.checks.push(match verdict {
            Ok(()) => Check::ran(
                "signature",
                true,
                format!("Ed25519 signature valid under {}", jws.header.kid),
            ),
            Err(reason) => Check::ran("signature", false, reason),
        });
    }
    if let Some(claims) = &claims {
        check_times(claims, now, &mut report);
    }
    report.claims = claims;
    report.ok = !report.checks.is_empty() && report.checks.iter().all(|c| c.ok == Some(true));
    report
}

fn check_header(jws: &FlattenedJws, report: &mut ReceiptReport) -> bool {
    let header = b64::decode(&jws.protected)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
    let Some(header) = header else {
        report.checks.push(Check::ran(
            "header",
            false,
            "protected header is not base64url JSON",
        ));
        return false;
    };
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or("(missing)");
    let verdict = if alg != "EdDSA" {
        Err(format!("alg {alg}, expected EdDSA"))
    } else if header.get("crit").is_some() {
        Err("crit parameters are not understood".into())
    } else if header.get("kid").is_some() {
        Err("kid must be only in the unprotected header".into())
    } else {
        Ok(())
    };
    report.header = Some(header);
    match verdict {
        Ok(_) => {
            report.checks.push(Check::ran("header", true, "alg EdDSA"));
            true
        }
        Err(reason) => {
            report.checks.push(Check::ran("header", false, reason));
            false
        }
    }
}

fn check_claims(jws: &FlattenedJws, report: &mut ReceiptReport) -> Option<ReceiptClaims> {
    match crate::receipt::claims_of(jws) {
        Ok(claims) => {
            report.checks.push(Check::ran(
                "claims",
                true,
                format!(
                    "{} receipt {} for message {} ({} → {})",
                    claims.receipt_type.as_str(),
                    claims.receipt_id,
                    claims.message_id,
                    claims.sender_id,
                    claims.recipient_id
                ),
            ));
            Some(claims)
        }
        Err(e) => {
            report
                .checks
                .push(Check::ran("claims", false, e.to_string()));
            None
        }
    }
}

/// Finds `kid` in the JWKS; keys of other types or ids are ignored, as a verifier must.
fn check_kid(kid: &str, jwks: &Value, report: &mut ReceiptReport) -> Option<PublicJwk> {
    let Some(keys) = jwks.get("keys").and_then(Value::as_array) else {
        report
            .checks
            .push(Check::ran("kid", false, "the JWKS has no \"keys\" array"));
        return None;
    };
    let Some(entry) = keys
        .iter()
        .find(|k| k.get("kid").and_then(Value::as_str) == Some(kid))
    else {
        let listed: Vec<&str> = keys
            .iter()
            .filter_map(|k| k.get("kid").and_then(Value::as_str))
            .collect();
        report.checks.push(Check::ran(
            "kid",
            false,
            format!(
                "{kid} is not in the JWKS (listed: {}); the key was revoked, or this JWKS is another server's",
                if listed.is_empty() { "none".to_owned() } else { listed.join(", ") }
            ),
        ));
        return None;
    };
    match PublicJwk::from_json(entry) {
        Ok(key @ PublicJwk::Ed25519(_)) => {
            report.checks.push(Check::ran(
                "kid",
                true,
                format!("{kid} is published (OKP/Ed25519)"),
            ));
            Some(key)
        }
        Ok(_) => {
            report.checks.push(Check::ran(
                "kid",
                false,
                format!("{kid} is published but is not an OKP/Ed25519 key"),
            ));
            None
        }
        Err(e) => {
            report.checks.push(Check::ran(
                "kid",
                false,
                format!("{kid} is published but unusable: {e}"),
            ));
            None
        }
    }
}

fn unix(text: &str) -> Option<i64> {
    atlas_proto::timestamp::parse_rfc3339(text)
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}

/// The millisecond timestamp inside a UUIDv7 message id.
fn uuid_v7_millis(id: &str) -> Option<i64> {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || hex.as_bytes().get(12) != Some(&b'7') {
        return None;
    }
    i64::from_str_radix(hex.get(..12)?, 16).ok()
}

fn check_times(c: &ReceiptClaims, now: i64, report: &mut ReceiptReport) {
    let accepted = unix(&c.accepted_at);
    let delivered = c.delivered_at.as_deref().map(unix);
    let id_time = uuid_v7_millis(&c.message_id).map(|ms| ms.div_euclid(1000));
    let problem = if accepted.is_none() {
        Some(format!("accepted_at {:?} is not RFC 3339", c.accepted_at))
    } else if c.iat > now + CLOCK_SKEW_SECONDS {
        Some(format!("issued {} s in the future", c.iat - now))
    } else if accepted.is_some_and(|a| a > c.iat + 1) {
        Some("accepted after the receipt was signed".into())
    } else if id_time.is_none() {
        Some(format!("message id {} is not a UUIDv7", c.message_id))
    } else if let (Some(a), Some(i)) = (accepted, id_time)
        && (a - i).abs() > 1
    {
        Some(format!(
            "accepted_at is {} s away from the message id's own time",
            a - i
        ))
    } else if c.exp <= c.iat {
        Some("expires before it was issued".into())
    } else {
        match (c.receipt_type, delivered) {
            (ReceiptType::Delivered, None) => Some("delivered receipt without delivered_at".into()),
            (ReceiptType::Delivered, Some(None)) => Some("delivered_at is not RFC 3339".into()),
            (ReceiptType::Delivered, Some(Some(d)))
                if accepted.is_some_and(|a| d < a) || d > c.iat + 1 =>
            {
                Some("delivered_at is not between acceptance and signing".into())
            }
            (ReceiptType::Accepted, Some(_)) => {
                Some("accepted receipt carries delivered_at".into())
            }
            _ => None,
        }
    };
    report.checks.push(match problem {
        Some(reason) => Check::ran("timestamps", false, reason),
        None => Check::ran(
            "timestamps",
            true,
            format!("accepted {}, signed {}", c.accepted_at, fmt(c.iat)),
        ),
    });
    report.checks.push(if c.exp > now {
        Check::ran(
            "expiry",
            true,
            format!("valid until {} ({})", fmt(c.exp), span(c.exp - now)),
        )
    } else {
        Check::ran(
            "expiry",
            false,
            format!(
                "expired at {} ({} ago); extend receipts.expires_at and reissue",
                fmt(c.exp),
                span(now - c.exp)
            ),
        )
    });
}

fn fmt(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .map(atlas_proto::timestamp::rfc3339)
        .unwrap_or_else(|| unix.to_string())
}

fn span(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 7_200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3_600),
        s => format!("{} days", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipt::{ReceiptSigner, published_jwk};
    use atlas_proto::UserId;
    use serde_json::json;

    const NOW: i64 = 1_761_696_000;

    /// A receipt of a message accepted at `NOW`.
    fn claims() -> ReceiptClaims {
        crate::receipt::tests::claims()
    }

    fn uuid_at(ms: i64) -> String {
        let hex = format!("{ms:012x}");
        format!("{}-{}-7000-8000-000000000000", &hex[..8], &hex[8..])
    }

    struct Fixture {
        signer: ReceiptSigner,
        jwks: Value,
    }

    fn fixture() -> Fixture {
        let (kid, seed) = ReceiptSigner::generate();
        let (other, other_seed) = ReceiptSigner::generate();
        Fixture {
            signer: ReceiptSigner::new(&kid, &seed).unwrap(),
            jwks: json!({"keys": [
                {"kty": "RSA", "kid": "unrelated", "n": "AQAB", "e": "AQAB"},
                published_jwk(&other, &other_seed).unwrap(),
                published_jwk(&kid, &seed).unwrap(),
            ]}),
        }
    }

    fn failed(report: &ReceiptReport) -> Vec<&'static str> {
        crate::checks::failed(&report.checks)
    }

    #[test]
    fn a_good_receipt_passes_every_check_in_both_forms() {
        let f = fixture();
        let jws = f.signer.sign(&claims());
        for input in [jws.to_json(), jws.to_base64()] {
            let report = verify_receipt(&input, &f.jwks, NOW + 10);
            assert!(report.ok, "{:?}", report.checks);
            let names: Vec<_> = report.checks.iter().map(|c| c.name).collect();
            assert_eq!(
                names,
                [
                    "structure",
                    "header",
                    "claims",
                    "kid",
                    "signature",
                    "timestamps",
                    "expiry"
                ]
            );
        }
    }

    #[test]
    fn tampering_is_caught_by_the_signature() {
        let f = fixture();
        let jws = f.signer.sign(&claims());
        let mut altered = claims();
        altered.recipient_id = UserId::new("mallory").unwrap();
        let mut tampered_payload = jws.clone();
        tampered_payload.payload = b64::encode(serde_json::to_vec(&altered).unwrap());
        let report = verify_receipt(&tampered_payload.to_json(), &f.jwks, NOW);
        assert_eq!(failed(&report), ["signature"]);

        let mut tampered_sig = jws.clone();
        let mut sig = b64::decode(&jws.signature).unwrap();
        sig[0] ^= 1;
        tampered_sig.signature = b64::encode(sig);
        assert_eq!(
            failed(&verify_receipt(&tampered_sig.to_json(), &f.jwks, NOW)),
            ["signature"]
        );
    }

    #[test]
    fn unknown_kid_and_unrelated_jwks_name_the_key() {
        let f = fixture();
        let jws = f.signer.sign(&claims());
        let report = verify_receipt(
            &jws.to_json(),
            &json!({"keys": [{"kty": "RSA", "kid": "unrelated"}]}),
            NOW,
        );
        assert_eq!(failed(&report), ["kid"]);
        assert!(
            report
                .failure()
                .unwrap()
                .contains("not in the JWKS (listed: unrelated)")
        );
        assert_eq!(
            failed(&verify_receipt(&jws.to_json(), &json!({"nokeys": 1}), NOW)),
            ["kid"]
        );
        // A kid that names a key of another type.
        let mut relabelled = jws.clone();
        relabelled.header.kid = "unrelated".into();
        assert!(
            verify_receipt(&relabelled.to_json(), &f.jwks, NOW)
                .failure()
                .unwrap()
                .contains("unusable")
        );
    }

    #[test]
    fn expiry_and_timestamp_sanity() {
        let f = fixture();
        let jws = f.signer.sign(&claims());
        let report = verify_receipt(&jws.to_json(), &f.jwks, NOW + 86_401);
        assert_eq!(failed(&report), ["expiry"]);
        assert!(
            report
                .failure()
                .unwrap()
                .contains("extend receipts.expires_at")
        );

        let future = verify_receipt(&jws.to_json(), &f.jwks, NOW - CLOCK_SKEW_SECONDS - 10);
        assert_eq!(failed(&future), ["timestamps"]);

        let mut odd = claims();
        odd.message_id = uuid_at((NOW - 3_600) * 1000).parse().unwrap();
        let report = verify_receipt(&f.signer.sign(&odd).to_json(), &f.jwks, NOW);
        assert!(report.failure().unwrap().contains("message id's own time"));

        let mut delivered = claims();
        delivered.receipt_type = ReceiptType::Delivered;
        delivered.delivered_at = Some("2025-10-28T00:00:00Z".into());
        assert_eq!(
            failed(&verify_receipt(
                &f.signer.sign(&delivered).to_json(),
                &f.jwks,
                NOW
            )),
            ["timestamps"]
        );
        delivered.delivered_at = Some("2025-10-29T00:00:00Z".into());
        assert!(verify_receipt(&f.signer.sign(&delivered).to_json(), &f.jwks, NOW).ok);
    }

    #[test]
    fn malformed_input_reports_structure() {
        let f = fixture();
        for bad in ["", "not base64 at all!", "{\"protected\": 1}"] {
            let report = verify_receipt(bad, &f.jwks, NOW);
            assert!(!report.ok);
            assert_eq!(failed(&report), ["structure"]);
        }
        let mut bad_header = f.signer.sign(&claims());
        bad_header.protected = b64::encode(r#"{"alg":"none"}"#);
        let report = verify_receipt(&bad_header.to_json(), &f.jwks, NOW);
        assert_eq!(failed(&report), ["header"]);
    }
}
