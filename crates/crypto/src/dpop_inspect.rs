//! Dissects a DPoP proof for an operator (`atlas verify-dpop`): every check
//! runs and reports, instead of stopping at the first failure as the server does.
pub use crate::checks::Check;
use crate::dpop::{IatWindow, MAX_JTI_LEN, access_token_hash, normalise_htu};
use crate::jwk::PublicJwk;
use crate::jws::CompactJws;
use serde::Serialize;
use serde_json::Value;

/// Everything `verify-dpop` prints.
#[derive(Debug, Clone, Serialize)]
pub struct ProofReport {
    /// True when no check failed.
    pub ok: bool,
    /// The proof's header, if it decoded.
    pub header: Option<Value>,
    /// The proof's claims, if they decoded.
    pub claims: Option<Value>,
    /// RFC 7638 thumbprint of the proof key.
    pub jkt: Option<String>,
    /// The checks, in order.
    pub checks: Vec<Check>,
}

/// What to check the proof against.
#[derive(Debug, Clone, Copy)]
pub struct Inspection<'a> {
    /// The access token presented with the proof (`Authorization: DPoP <token>`).
    pub token: Option<&'a str>,
    /// The request method, if known.
    pub method: Option<&'a str>,
    /// The request URL, if known.
    pub url: Option<&'a str>,
    /// Current Unix time.
    pub now: i64,
    /// Accepted `iat` window.
    pub window: IatWindow,
}

/// A claim for display: its value, or "(missing)".
fn shown(value: Option<&str>) -> &str {
    value.unwrap_or("(missing)")
}

/// The `cnf.jkt` of a JWT access token, read without verifying the token (its key is the server's).
pub fn token_jkt(token: &str) -> Option<String> {
    let jws = CompactJws::parse(token).ok()?;
    let claims = jws.claims().ok()?;
    claims.get("cnf")?.get("jkt")?.as_str().map(str::to_owned)
}

/// Runs every check of RFC 9449 §4.3 that needs no server state.
pub fn inspect_proof(proof: &str, against: &Inspection<'_>) -> ProofReport {
    let mut checks = Vec::new();
    let jws = match CompactJws::parse(proof.trim()) {
        Ok(jws) => {
            checks.push(Check::ran(
                "structure",
                true,
                "three base64url parts, JSON header",
            ));
            jws
        }
        Err(e) => {
            checks.push(Check::ran("structure", false, e.to_string()));
            return ProofReport {
                ok: false,
                header: None,
                claims: None,
                jkt: None,
                checks,
            };
        }
    };
    let claims = jws.claims().ok();
    if claims.is_none() {
        checks.push(Check::ran("claims", false, "payload is not a JSON object"));
    }
    let typ = jws.header.get("typ").and_then(Value::as_str);
    checks.push(Check::ran(
        "typ",
        typ == Some("dpop+jwt"),
        format!("{} (must be dpop+jwt)", shown(typ)),
    ));
    let alg = jws.alg();
    checks.push(Check::ran(
        "alg",
        matches!(alg, Some("EdDSA" | "ES256")),
        format!("{} (EdDSA or ES256)", shown(alg)),
    ));

    let key = jws.header.get("jwk").map(PublicJwk::from_json);
    let jkt = match &key {
        Some(Ok(key)) => {
            checks.push(Check::ran("jwk", true, format!("{} public key", key.alg())));
            let verified = jws.verify(key);
            checks.push(Check::ran(
                "signature",
                verified.is_ok(),
                verified
                    .err()
                    .map_or("verifies with the embedded jwk".into(), |e| e.to_string()),
            ));
            Some(key.thumbprint())
        }
        Some(Err(e)) => {
            checks.push(Check::ran("jwk", false, e.to_string()));
            None
        }
        None => {
            checks.push(Check::ran("jwk", false, "header has no jwk"));
            None
        }
    };

    let text = |name: &str| {
        claims
            .as_ref()
            .and_then(|c| c.get(name))
            .and_then(Value::as_str)
    };
    match (against.token, &jkt) {
        (Some(token), Some(jkt)) => match token_jkt(token) {
            Some(bound) => checks.push(Check::ran(
                "token binding",
                &bound == jkt,
                format!("token cnf.jkt {bound}, proof key thumbprint {jkt}"),
            )),
            None => checks.push(Check::ran(
                "token binding",
                false,
                "the token is not a JWT with cnf.jkt",
            )),
        },
        (None, _) => checks.push(Check::skipped("token binding", "no --token given")),
        (Some(_), None) => checks.push(Check::skipped(
            "token binding",
            "no valid proof key to compare",
        )),
    }
    match (against.token, text("ath")) {
        (Some(token), Some(ath)) => checks.push(Check::ran(
            "ath",
            ath == access_token_hash(token),
            format!(
                "ath {ath}, SHA-256 of the token {}",
                access_token_hash(token)
            ),
        )),
        (Some(_), None) => checks.push(Check::ran(
            "ath",
            false,
            "proof has no ath but a token is presented",
        )),
        (None, _) => checks.push(Check::skipped("ath", "no --token given")),
    }
    match (against.method, text("htm")) {
        (Some(method), htm) => checks.push(Check::ran(
            "htm",
            htm == Some(method),
            format!("{}, request {method}", shown(htm)),
        )),
        (None, htm) => checks.push(Check::skipped(
            "htm",
            format!("{}; no --method given", shown(htm)),
        )),
    }
    match (against.url, text("htu")) {
        (Some(url), Some(htu)) => checks.push(Check::ran(
            "htu",
            normalise_htu(htu) == normalise_htu(url),
            format!("{htu}, request {url}"),
        )),
        (Some(url), None) => {
            checks.push(Check::ran("htu", false, format!("missing, request {url}")))
        }
        (None, htu) => checks.push(Check::skipped(
            "htu",
            format!("{}; no --url given", shown(htu)),
        )),
    }
    match claims
        .as_ref()
        .and_then(|c| c.get("iat"))
        .and_then(Value::as_i64)
    {
        Some(iat) => {
            let age = against.now - iat;
            let ok = age <= against.window.max_age_secs && -age <= against.window.max_skew_secs;
            checks.push(Check::ran(
                "iat",
                ok,
                format!(
                    "{iat} ({age} s ago; accepted: up to {} s old, {} s ahead)",
                    against.window.max_age_secs, against.window.max_skew_secs
                ),
            ));
        }
        None => checks.push(Check::ran("iat", false, "missing or not a number")),
    }
    let jti = text("jti");
    checks.push(Check::ran(
        "jti",
        jti.is_some_and(|j| !j.is_empty() && j.len() <= MAX_JTI_LEN),
        format!(
            "{} (replays are caught by the server's cache, key dpop:jti:<JTI>)",
            shown(jti)
        ),
    ));

    let ok = checks.iter().all(|c| c.ok != Some(false));
    let claims = claims.map(Value::Object);
    ProofReport {
        ok,
        header: Some(jws.header.clone()),
        claims,
        jkt,
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dpop::create_proof;
    use crate::jws::{HmacJwsKey, JwsSigner};

    fn against<'a>(
        token: Option<&'a str>,
        method: Option<&'a str>,
        url: Option<&'a str>,
        now: i64,
    ) -> Inspection<'a> {
        Inspection {
            token,
            method,
            url,
            now,
            window: IatWindow::default(),
        }
    }

    fn failed(report: &ProofReport) -> Vec<&'static str> {
        crate::checks::failed(&report.checks)
    }

    #[test]
    fn rfc9449_figure_13_passes_every_check_it_can() {
        let v: Value =
            serde_json::from_str(include_str!("../test-vectors/rfc9449-dpop.json")).unwrap();
        let p = &v["proofs"][2];
        let token = p["access_token"].as_str().unwrap();
        let report = inspect_proof(
            p["proof"].as_str().unwrap(),
            &against(
                Some(token),
                Some("GET"),
                p["htu"].as_str(),
                p["iat"].as_i64().unwrap(),
            ),
        );
        // The RFC's token is opaque, so binding cannot be shown; everything else passes.
        assert_eq!(failed(&report), ["token binding"]);
        assert_eq!(report.jkt.as_deref(), v["jwk_thumbprint_sha256"].as_str());
    }

    #[test]
    fn a_bound_token_and_a_foreign_one() {
        let key = JwsSigner::generate_ed25519();
        let jkt = key.public_jwk().thumbprint();
        let token = HmacJwsKey::new([1; 32]).sign_compact(
            serde_json::json!({}),
            serde_json::json!({"cnf": {"jkt": jkt}})
                .to_string()
                .as_bytes(),
        );
        let proof = create_proof(
            &key,
            "POST",
            "https://atlas.test/messages",
            1000,
            Some(&token),
            None,
        );
        let ok = inspect_proof(
            &proof,
            &against(
                Some(&token),
                Some("POST"),
                Some("https://atlas.test/messages"),
                1010,
            ),
        );
        assert!(ok.ok, "{:?}", ok.checks);

        let other = JwsSigner::generate_p256();
        let stolen = create_proof(
            &other,
            "GET",
            "https://atlas.test/keys/count",
            1000,
            Some(&token),
            None,
        );
        let bad = inspect_proof(
            &stolen,
            &against(
                Some(&token),
                Some("POST"),
                Some("https://atlas.test/messages"),
                5000,
            ),
        );
        assert_eq!(failed(&bad), ["token binding", "htm", "htu", "iat"]);
        assert!(!bad.ok);
        let garbage = inspect_proof("not a proof", &against(None, None, None, 0));
        assert_eq!(failed(&garbage), ["structure"]);
    }
}
