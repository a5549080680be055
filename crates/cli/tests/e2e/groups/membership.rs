//! Membership the delivery service enforces: bad handshakes refused without touching the group, removed members cut off.
use super::*;

async fn post_to_team(who: &Member, body: Value) -> (u16, Value) {
    who.call("POST", "/groups/team/commits", Some(body)).await
}

async fn bad_handshakes_leave_the_group_untouched(h: Harness) {
    let url = h.url();
    let mut alice = Member::new(&url, "alice").await;
    let mut bob = Member::new(&url, "bob").await;
    let mallory = Member::new(&url, "mallory").await;
    alice.create_group("team").await;
    let kp = b64::decode_std(&alice.claim("bob").await).unwrap();
    let add = alice.mls.add("team", &[kp]).unwrap();
    let first = add.clone();
    alice.commit(add).await;
    bob.join().await;

    let update = bob.mls.self_update("team").unwrap();
    let good_info = b64::encode_std(&update.group_info);
    let cases = [
        (
            json!({"commit": "!!!", "group_info": good_info}),
            400,
            "invalid_request",
            "not base64",
        ),
        (
            json!({"commit": b64::encode_std(b"garbage"), "group_info": good_info}),
            400,
            "invalid_request",
            "garbage",
        ),
        (
            json!({"commit": b64::encode_std(&first.commit), "group_info": b64::encode_std(&first.group_info)}),
            409,
            "epoch_conflict",
            "replayed commit",
        ),
        (
            json!({"commit": b64::encode_std(&update.commit), "group_info": b64::encode_std(&first.group_info)}),
            400,
            "invalid_mls_message",
            "stale GroupInfo",
        ),
        (
            json!({"commit": b64::encode_std(&update.commit), "group_info": good_info, "welcome": "AAAA"}),
            400,
            "invalid_request",
            "welcome without adds",
        ),
        (
            json!({"commit": b64::encode_std(&update.commit)}),
            400,
            "invalid_request",
            "missing GroupInfo",
        ),
    ];
    for (body, status, code, why) in cases {
        let (s, b) = post_to_team(&bob, body).await;
        assert_eq!(
            (s, b["error"].as_str().unwrap_or("")),
            (status, code),
            "{why}: {b}"
        );
    }
    // A commit for a future epoch (made on a copy of alice's state that ran ahead),
    // a commit with a flipped byte in its signed content, and a replayed Welcome.
    let ahead = MlsDevice::restore(&alice.mls.snapshot().unwrap()).unwrap();
    ahead.self_update("team").unwrap();
    ahead.confirm_commit("team").unwrap();
    let future = ahead.self_update("team").unwrap();
    let (s, b) = post_to_team(
        &alice,
        json!({"commit": b64::encode_std(&future.commit), "group_info": b64::encode_std(&future.group_info)}),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("wrong_epoch")), "{b}");
    let mut tampered = update.commit.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x01;
    let (s, b) = post_to_team(
        &bob,
        json!({"commit": b64::encode_std(&tampered), "group_info": good_info}),
    )
    .await;
    assert!(
        s == 400 && b["error"] != "internal",
        "tampered commit: {s} {b}"
    );
    assert!(
        bob.mls.join(first.welcome.as_ref().unwrap()).is_err(),
        "a replayed Welcome is refused"
    );
    // bob's commit posted by alice: signed by another member.
    let (s, b) = post_to_team(
        &alice,
        json!({"commit": b64::encode_std(&update.commit), "group_info": good_info}),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (403, Some("forbidden")), "{b}");
    // A non-member's commit from a look-alike group of the same name and epoch.
    let forger = MlsDevice::new(&mallory.http.user_id, &mallory.http.device_id).unwrap();
    forger.create_group("team").unwrap();
    forger.self_update("team").unwrap();
    forger.confirm_commit("team").unwrap();
    let forged = forger.self_update("team").unwrap();
    let (s, b) = post_to_team(&mallory, json!({"commit": b64::encode_std(&forged.commit), "group_info": b64::encode_std(&forged.group_info)})).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("invalid_mls_message")),
        "{b}"
    );
    // A commit for another group, an oversized body, unknown and malformed group ids.
    let other = alice.mls.create_group("other").unwrap();
    alice
        .call(
            "POST",
            "/groups",
            Some(json!({"group_id": "other", "group_info": b64::encode_std(&other)})),
        )
        .await;
    let (s, b) = alice
        .call(
            "POST",
            "/groups/other/commits",
            Some(json!({"commit": b64::encode_std(&update.commit), "group_info": good_info})),
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("invalid_mls_message")),
        "{b}"
    );
    let huge = json!({"commit": "A".repeat(17 * 1024 * 1024), "group_info": good_info});
    // The server answers 413 without reading the body and closes that connection:
    // send it on a connection of its own, so no later request reuses it.
    let r = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
        .post(format!("{url}/groups/team/commits"))
        .header("Authorization", format!("DPoP {}", bob.token))
        .header(
            "DPoP",
            bob.http.proof(
                "POST",
                "/groups/team/commits",
                Some(&bob.token),
                atlas_testing::now(),
            ),
        )
        .header("Content-Type", "application/json")
        .body(huge.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let (s, b) = bob.call("GET", "/groups/nope", None).await;
    assert_eq!((s, b["error"].as_str()), (404, Some("unknown_group")));
    let (s, b) = bob.call("GET", "/groups/bad%20name", None).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_request")));
    let (s, b) = mallory.call("GET", "/groups/team/messages", None).await;
    assert_eq!((s, b["error"].as_str()), (403, Some("not_a_member")));
    let (s, b) = mallory.call("GET", "/groups/team/group-info", None).await;
    assert_eq!((s, b["error"].as_str()), (403, Some("not_a_member")));
    // A group created in someone else's name, KeyPackages for another device.
    let (s, b) = mallory
        .call(
            "POST",
            "/groups",
            Some(json!({"group_id": "x", "group_info": b64::encode_std(&other)})),
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("invalid_mls_message")),
        "{b}"
    );
    let (s, b) = mallory
        .call(
            "POST",
            "/mls/key-packages",
            Some(json!({
                "key_packages": [b64::encode_std(bob.mls.key_package(false).unwrap())],
                "signature_key_binding": mallory.binding(),
            })),
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("invalid_request")),
        "{b}"
    );
    // Its own KeyPackage, but without a binding, or with bob's signature.
    for binding in [Value::Null, json!(bob.binding())] {
        let (s, b) = mallory
            .call(
                "POST",
                "/mls/key-packages",
                Some(json!({
                    "key_packages": [b64::encode_std(mallory.mls.key_package(false).unwrap())],
                    "signature_key_binding": binding,
                })),
            )
            .await;
        assert_eq!(
            (s, b["error"].as_str()),
            (400, Some("invalid_request")),
            "{b}"
        );
    }
    let (s, b) = mallory
        .call(
            "POST",
            "/mls/key-packages",
            Some(json!({
                "key_packages": [b64::encode_std(mallory.mls.key_package(true).unwrap())],
                "signature_key_binding": mallory.binding(),
            })),
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("invalid_request")),
        "last resort given as ordinary: {b}"
    );
    let (s, _) = mallory
        .call(
            "POST",
            "/mls/key-packages",
            Some(json!({"key_packages": vec!["AAAA"; 101]})),
        )
        .await;
    assert_eq!(s, 413);

    // Nothing above moved the group; bob's own commit still goes through.
    assert_eq!(group_epoch(&alice, "team").await, 1);
    let (s, b) = post_to_team(
        &bob,
        json!({"commit": b64::encode_std(&update.commit), "group_info": good_info}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    bob.mls.confirm_commit("team").unwrap();
    alice.sync("team").await;
    bob.say("team", "still here").await;
    assert_eq!(texts(&alice.sync("team").await), ["still here"]);
}

/// The review's removed-member attack: bob, removed from the group, tries to keep
/// reading it and to let himself back in by external commit. He sees the log up
/// to his removal and nothing after; GroupInfo, the group view and external
/// commits are refused; the group's epoch does not move. Also: acknowledgements
/// only move forward, and a Welcome is served until its member acknowledges it.
async fn a_removed_member_gets_nothing_and_cannot_rejoin(h: Harness) {
    let url = h.url();
    let mut alice = Member::new(&url, "alice").await;
    let mut bob = Member::new(&url, "bob").await;
    let mut carol = Member::new(&url, "carol").await;
    alice.create_group("team").await;
    let kp = b64::decode_std(&alice.claim("bob").await).unwrap();
    let out = alice.mls.add("team", &[kp]).unwrap();
    alice.commit(out).await;
    bob.join().await;
    let (_, welcomes) = bob.call("GET", "/groups/welcomes", None).await;
    assert_eq!(
        welcomes["entries"],
        json!([]),
        "an acknowledged Welcome is not served again"
    );
    alice.say("team", "first secret").await;
    assert_eq!(texts(&bob.sync("team").await), ["first secret"]);

    let out = alice
        .mls
        .remove("team", &[bob.mls.member().clone()])
        .unwrap();
    let removal_epoch = alice.commit(out).await;
    let removal_seq = alice.seen;
    alice.say("team", "second secret after removal").await;

    // The log: up to the commit that removed him, nothing after.
    let (status, log) = bob
        .call(
            "GET",
            &format!("/groups/team/messages?after={}", bob.seen),
            None,
        )
        .await;
    assert_eq!(status, 200, "{log}");
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{log}");
    assert_eq!(entries[0]["seq"], removal_seq);
    assert_eq!(entries[0]["kind"], "commit");
    let (_, everything) = bob.call("GET", "/groups/team/messages?after=0", None).await;
    assert!(
        everything["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["seq"].as_u64().unwrap() <= removal_seq),
        "{everything}"
    );
    let (_, by_epoch) = bob
        .call(
            "GET",
            &format!("/groups/team/messages?from_epoch={removal_epoch}"),
            None,
        )
        .await;
    assert!(
        by_epoch["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["kind"] != "application")
    );

    // No GroupInfo, no view, no acknowledgement, no message.
    for path in ["/groups/team/group-info", "/groups/team"] {
        let (status, body) = bob.call("GET", path, None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("not_a_member")),
            "{path}"
        );
    }
    let (status, _) = bob
        .call(
            "POST",
            "/groups/team/ack",
            Some(json!({"epoch": removal_epoch})),
        )
        .await;
    assert_eq!(status, 403);

    // An external commit built from a current GroupInfo (had from anywhere) is refused.
    let (_, info) = alice.call("GET", "/groups/team/group-info", None).await;
    let info = b64::decode_std(info["group_info"].as_str().unwrap()).unwrap();
    bob.mls.forget_group("team").unwrap();
    let rejoin = bob.mls.join_external(&info).unwrap();
    let (status, body) = bob.post_commit(&rejoin).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("not_a_member")),
        "{body}"
    );
    // Nor can a device that never was a member join that way.
    let stranger = carol.mls.join_external(&info).unwrap();
    let (status, _) = carol.post_commit(&stranger).await;
    assert_eq!(status, 403);
    assert_eq!(group_epoch(&alice, "team").await, removal_epoch);
    let (_, view) = alice.call("GET", "/groups/team", None).await;
    let active: Vec<&str> = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["status"] == "active")
        .map(|m| m["member_id"].as_str().unwrap())
        .collect();
    assert_eq!(active, [alice.id().as_str()]);

    // An older epoch acknowledged again leaves the member where it was.
    alice.ack("team", 0).await;
    let (_, view) = alice.call("GET", "/groups/team", None).await;
    assert_eq!(view["members"][0]["member_id"], alice.id());
    assert_eq!(view["members"][0]["epoch"], removal_epoch);

    // A Welcome is served until its member acknowledged the epoch it joins.
    let kp = b64::decode_std(&alice.claim("carol").await).unwrap();
    carol.mls.forget_group("team").ok();
    let out = alice.mls.add("team", &[kp]).unwrap();
    alice.commit(out).await;
    let (_, waiting) = carol.call("GET", "/groups/welcomes", None).await;
    assert_eq!(waiting["entries"].as_array().unwrap().len(), 1);
    carol.join().await;
    let (_, waiting) = carol.call("GET", "/groups/welcomes", None).await;
    assert_eq!(waiting["entries"], json!([]));
    assert!(texts(&carol.sync("team").await).is_empty());
}

on_both_backends!(
    a_removed_member_gets_nothing_and_cannot_rejoin,
    bad_handshakes_leave_the_group_untouched,
);
