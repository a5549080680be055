//! MLS groups through the delivery service: real openmls members over HTTP,
//! first-commit-wins per epoch (also across two server processes on one
//! PostgreSQL), and bad handshake input refused without touching the group.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)] // Tests fail loudly on purpose.

use crate::support;

use atlas_crypto::mls::{Incoming, MlsDevice};
use atlas_proto::b64;
use serde_json::{Value, json};
use support::{Harness, RawDevice};

/// A registered device with an MLS identity and a token.
struct Member {
    http: RawDevice,
    mls: MlsDevice,
    token: String,
    /// Position in the group log processed so far.
    seen: u64,
}

impl Member {
    async fn new(base: &str, user: &str) -> Self {
        let http = RawDevice::register(base, user).await;
        let mls = MlsDevice::new(&http.user_id, &http.device_id).unwrap();
        let token = http.token().await;
        let member = Self {
            http,
            mls,
            token,
            seen: 0,
        };
        let upload = json!({
            "key_packages": [b64::encode_std(member.mls.key_package(false).unwrap())],
            "last_resort": b64::encode_std(member.mls.key_package(true).unwrap()),
            "signature_key_binding": member.binding(),
        });
        let (status, stock) = member.call("POST", "/mls/key-packages", Some(upload)).await;
        assert_eq!(status, 200, "{stock}");
        assert_eq!(stock, json!({"available": 1, "last_resort": true}));
        member
    }

    /// Creates group `name` locally and registers it with the service.
    async fn create_group(&self, name: &str) {
        let info = self.mls.create_group(name).unwrap();
        let body = json!({"group_id": name, "group_info": b64::encode_std(&info)});
        let (status, answer) = self.call("POST", "/groups", Some(body)).await;
        assert_eq!(status, 201, "{answer}");
    }

    /// This device's signature binding its MLS signature key to its certified key.
    fn binding(&self) -> String {
        self.http.account.sign(&self.mls.signature_key_statement())
    }

    fn id(&self) -> String {
        format!("{}/{}", self.http.user_id, self.http.device_id)
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.http.call(&self.token, method, path, body).await
    }

    async fn claim(&self, user: &str) -> String {
        let (status, claimed) = self
            .call(
                "POST",
                "/mls/key-packages/claim",
                Some(json!({"user_id": user})),
            )
            .await;
        assert_eq!(status, 200, "{claimed}");
        claimed["key_packages"][0]["key_package"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn post_commit(&self, out: &atlas_crypto::mls::CommitOut) -> (u16, Value) {
        let mut body = json!({
            "commit": b64::encode_std(&out.commit),
            "group_info": b64::encode_std(&out.group_info),
        });
        if let Some(w) = &out.welcome {
            body["welcome"] = json!(b64::encode_std(w));
        }
        self.call(
            "POST",
            &format!("/groups/{}/commits", out.group),
            Some(body),
        )
        .await
    }

    /// Commits `out`, applying it locally once the service accepted it.
    async fn commit(&mut self, out: atlas_crypto::mls::CommitOut) -> u64 {
        let (status, answer) = self.post_commit(&out).await;
        assert_eq!(status, 201, "{answer}");
        let epoch = self.mls.confirm_commit(&out.group).unwrap();
        assert_eq!(answer["epoch"], epoch);
        self.seen = answer["seq"].as_u64().unwrap();
        self.ack(&out.group, epoch).await;
        epoch
    }

    async fn ack(&self, group: &str, epoch: u64) {
        let (status, body) = self
            .call(
                "POST",
                &format!("/groups/{group}/ack"),
                Some(json!({"epoch": epoch})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    async fn join(&mut self) -> String {
        let (status, welcomes) = self.call("GET", "/groups/welcomes", None).await;
        assert_eq!(status, 200);
        let w = welcomes["entries"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        let (group, epoch) = self
            .mls
            .join(&b64::decode_std(w["body"].as_str().unwrap()).unwrap())
            .unwrap();
        self.seen = w["seq"].as_u64().unwrap();
        self.ack(&group, epoch).await;
        group
    }

    /// Processes everything new in the group's log; returns what it was.
    async fn sync(&mut self, group: &str) -> Vec<Incoming> {
        let (status, log) = self
            .call(
                "GET",
                &format!("/groups/{group}/messages?after={}", self.seen),
                None,
            )
            .await;
        assert_eq!(status, 200, "{log}");
        let mut out = Vec::new();
        for e in log["entries"].as_array().unwrap() {
            self.seen = e["seq"].as_u64().unwrap();
            let body = b64::decode_std(e["body"].as_str().unwrap()).unwrap();
            // Its own messages and commits come back too: this device already has them.
            if e["sender_id"] == self.id() {
                continue;
            }
            match self.mls.process(&body) {
                Ok(incoming) => out.push(incoming),
                Err(err) => panic!("{} could not process {e}: {err}", self.id()),
            }
        }
        // A removed member has nothing left to acknowledge.
        if self.mls.has_group(group).unwrap() {
            self.ack(group, self.mls.epoch(group).unwrap()).await;
        }
        out
    }

    async fn say(&self, group: &str, text: &str) {
        let message = self.mls.encrypt(group, text.as_bytes()).unwrap();
        let (status, body) = self
            .call(
                "POST",
                &format!("/groups/{group}/messages"),
                Some(json!({"message": b64::encode_std(message)})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
}

fn texts(incoming: &[Incoming]) -> Vec<String> {
    incoming
        .iter()
        .filter_map(|i| match i {
            Incoming::Application { plaintext, .. } => {
                Some(String::from_utf8_lossy(plaintext).into_owned())
            }
            _ => None,
        })
        .collect()
}

async fn group_epoch(member: &Member, group: &str) -> u64 {
    let (status, view) = member.call("GET", &format!("/groups/{group}"), None).await;
    assert_eq!(status, 200, "{view}");
    view["current_epoch"].as_u64().unwrap()
}

async fn groups_add_talk_race_and_remove(h: Harness) {
    let url = h.url();
    let mut alice = Member::new(&url, "alice").await;
    let mut bob = Member::new(&url, "bob").await;
    let mut carol = Member::new(&url, "carol").await;

    let info = alice.mls.create_group("team").unwrap();
    let (status, created) = alice
        .call(
            "POST",
            "/groups",
            Some(json!({"group_id": "team", "group_info": b64::encode_std(&info)})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["current_epoch"], 0);
    let (status, body) = alice
        .call(
            "POST",
            "/groups",
            Some(json!({"group_id": "team", "group_info": b64::encode_std(&info)})),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("group_exists"))
    );

    let packages = vec![
        b64::decode_std(&alice.claim("bob").await).unwrap(),
        b64::decode_std(&alice.claim("carol").await).unwrap(),
    ];
    let add = alice.mls.add("team", &packages).unwrap();
    assert_eq!(alice.commit(add).await, 1);
    assert_eq!(bob.join().await, "team");
    assert_eq!(carol.join().await, "team");

    alice.say("team", "hello team").await;
    assert_eq!(texts(&bob.sync("team").await), ["hello team"]);
    assert_eq!(texts(&carol.sync("team").await), ["hello team"]);

    // bob and carol commit in the same epoch: one wins, the other is told the winner.
    let from_bob = bob.mls.self_update("team").unwrap();
    let from_carol = carol.mls.self_update("team").unwrap();
    let (a, b) = tokio::join!(bob.post_commit(&from_bob), carol.post_commit(&from_carol));
    let statuses = [a.0, b.0];
    assert!(
        statuses.contains(&201) && statuses.contains(&409),
        "{a:?} {b:?}"
    );
    let (winner, loser, conflict) = if a.0 == 201 {
        (&mut bob, &mut carol, b.1)
    } else {
        (&mut carol, &mut bob, a.1)
    };
    assert_eq!(conflict["error"], "epoch_conflict");
    assert_eq!(conflict["details"]["current_epoch"], 2);
    assert_eq!(conflict["details"]["winner"]["epoch"], 2);
    winner.mls.confirm_commit("team").unwrap();
    // The loser rebases: drops its commit, processes the winner, retries.
    loser.mls.discard_commit("team").unwrap();
    loser.sync("team").await;
    let retry = loser.mls.self_update("team").unwrap();
    assert_eq!(loser.commit(retry).await, 3);
    winner.sync("team").await;
    alice.sync("team").await;
    assert_eq!(group_epoch(&alice, "team").await, 3);

    // alice removes carol; carol sees her removal; bob and alice go on.
    let remove = alice
        .mls
        .remove("team", &[carol.mls.member().clone()])
        .unwrap();
    assert_eq!(alice.commit(remove).await, 4);
    let seen = carol.sync("team").await;
    assert!(
        seen.iter().any(|i| matches!(
            i,
            Incoming::Commit {
                removed_self: true,
                ..
            }
        )),
        "{seen:?}"
    );
    bob.sync("team").await;
    bob.say("team", "just us").await;
    assert_eq!(texts(&alice.sync("team").await), ["just us"]);
    let (status, body) = carol
        .call(
            "POST",
            "/groups/team/messages",
            Some(json!({"message": b64::encode_std(alice.mls.encrypt("team", b"x").unwrap())})),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("not_a_member"))
    );

    // Every member's acknowledged epoch is visible.
    let (_, view) = alice.call("GET", "/groups/team", None).await;
    let members: Vec<(String, u64, String)> = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["member_id"].as_str().unwrap().into(),
                m["epoch"].as_u64().unwrap(),
                m["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        members,
        [
            ("alice/RAW".into(), 4, "active".into()),
            ("bob/RAW".into(), 4, "active".into()),
            ("carol/RAW".into(), 3, "removed".into()),
        ]
    );
}

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
                support::now(),
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
    groups_add_talk_race_and_remove,
    bad_handshakes_leave_the_group_untouched,
    stuck_members_recover_with_send_update_and_rejoin,
    rollback_epoch_discards_a_bad_commit_and_members_converge,
    five_members_churn_while_one_is_offline,
);

/// Two server processes on one PostgreSQL: concurrent commits of one epoch,
/// each sent to a different process, still have exactly one winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_winner_per_epoch_across_two_servers() {
    let h = Harness::postgres().await;
    let mut config = h.config();
    config.listen = "127.0.0.1:0".parse().unwrap();
    let second = atlas_server::start(config).await.unwrap();
    let url = h.url();
    let mut alice = Member::new(&url, "alice").await;
    alice.create_group("team").await;
    let mut others = Vec::new();
    for (i, user) in ["bob", "carol", "dave", "erin"].iter().enumerate() {
        // Half the members talk to the second process.
        let base = if i % 2 == 0 {
            url.clone()
        } else {
            second.public_url.clone()
        };
        others.push(Member::new(&base, user).await);
    }
    let mut packages = Vec::new();
    for m in &others {
        packages.push(b64::decode_std(&alice.claim(&m.http.user_id.to_string()).await).unwrap());
    }
    let add = alice.mls.add("team", &packages).unwrap();
    alice.commit(add).await;
    for m in &mut others {
        m.join().await;
    }
    for round in 0..3 {
        let commits: Vec<_> = others
            .iter()
            .map(|m| m.mls.self_update("team").unwrap())
            .collect();
        let answers = futures_util::future::join_all(
            others.iter().zip(&commits).map(|(m, c)| m.post_commit(c)),
        )
        .await;
        let winners = answers.iter().filter(|(s, _)| *s == 201).count();
        assert_eq!(winners, 1, "round {round}: {answers:?}");
        assert!(
            answers
                .iter()
                .all(|(s, b)| *s == 201 || b["error"] == "epoch_conflict")
        );
        for (m, (s, _)) in others.iter_mut().zip(&answers) {
            if *s == 201 {
                m.mls.confirm_commit("team").unwrap();
            } else {
                m.mls.discard_commit("team").unwrap();
            }
        }
        for m in others.iter_mut() {
            m.sync("team").await;
        }
        alice.sync("team").await;
    }
    assert_eq!(group_epoch(&alice, "team").await, 4);
    others[0].say("team", "converged").await;
    for m in others.iter_mut().skip(1) {
        assert_eq!(texts(&m.sync("team").await), ["converged"]);
    }
    second.stop().await;
}

/// The CLI end to end: profiles persist their MLS state between commands,
/// concurrent commits rebase automatically, `inbox` shows group messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_groups_create_add_send_update_remove() {
    let h = Harness::sqlite().await;
    let home = h.homes.path.clone();
    let url = h.url();
    let atlas = |args: &[&str]| support::atlas_ok(&home, args);
    for user in ["alice", "bob", "carol", "dave"] {
        atlas(&["--profile", user, "register", user, "--server", &url]);
    }
    assert!(
        atlas(&["--profile", "alice", "group", "create", "team"])
            .contains("created group team (epoch 0)")
    );
    assert!(atlas(&["--profile", "alice", "group", "add", "team", "bob"]).contains("(epoch 1)"));
    assert!(atlas(&["--profile", "alice", "group", "add", "team", "carol"]).contains("(epoch 2)"));
    atlas(&["--profile", "alice", "group", "send", "team", "hello team"]);
    for reader in ["bob", "carol"] {
        let inbox = atlas(&["--profile", reader, "inbox"]);
        assert!(
            inbox.contains("#team alice/") && inbox.contains(": hello team"),
            "{reader}: {inbox}"
        );
    }

    // bob and carol update at the same time: both land, one on top of the other.
    let (bob, carol) = tokio::join!(
        tokio::task::spawn_blocking({
            let home = home.clone();
            move || {
                support::run_atlas(
                    Some(&home),
                    None,
                    &["--profile", "bob", "group", "update", "team"],
                )
            }
        }),
        tokio::task::spawn_blocking({
            let home = home.clone();
            move || {
                support::run_atlas(
                    Some(&home),
                    None,
                    &["--profile", "carol", "group", "update", "team"],
                )
            }
        })
    );
    let (bob, carol) = (bob.unwrap(), carol.unwrap());
    assert!(bob.0 && carol.0, "{bob:?} {carol:?}");
    atlas(&["--profile", "alice", "inbox"]);
    let members: Value = serde_json::from_str(&atlas(&[
        "--profile",
        "alice",
        "group",
        "members",
        "team",
        "--json",
    ]))
    .unwrap();
    assert_eq!(members["current_epoch"], 4);
    atlas(&[
        "--profile",
        "bob",
        "group",
        "send",
        "team",
        "after the race",
    ]);
    let inbox: Value =
        serde_json::from_str(&atlas(&["--profile", "carol", "inbox", "--json"])).unwrap();
    let texts: Vec<&str> = inbox
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert!(texts.contains(&"after the race"), "{inbox}");

    // Removal: carol learns it, alice and bob go on; the members list shows it.
    atlas(&["--profile", "alice", "group", "remove", "team", "carol"]);
    assert!(atlas(&["--profile", "carol", "inbox"]).contains("removed this device"));
    let listed = atlas(&["--profile", "bob", "group", "members", "team"]);
    assert!(
        listed.contains("carol/") && listed.contains("(removed)"),
        "{listed}"
    );
    let (ok, _, stderr) = support::run_atlas(
        Some(&home),
        None,
        &["--profile", "carol", "group", "send", "team", "let me in"],
    );
    assert!(!ok, "a removed member cannot send: {stderr}");
    // Added again, carol accepts the new Welcome in place of her old state.
    atlas(&["--profile", "alice", "group", "add", "team", "carol"]);
    atlas(&[
        "--profile",
        "alice",
        "group",
        "send",
        "team",
        "welcome back carol",
    ]);
    assert!(atlas(&["--profile", "carol", "inbox"]).contains("welcome back carol"));
    let (ok, _, stderr) = support::run_atlas(
        Some(&home),
        None,
        &["--profile", "dave", "group", "create", "team"],
    );
    assert!(!ok && stderr.contains("group_exists"), "{stderr}");
    // The refused creation left nothing behind: dave can still be welcomed into "team".
    atlas(&["--profile", "alice", "group", "add", "team", "dave"]);
    atlas(&["--profile", "alice", "group", "send", "team", "hi dave"]);
    assert!(atlas(&["--profile", "dave", "inbox"]).contains("hi dave"));
    let (ok, _, stderr) = support::run_atlas(
        Some(&home),
        None,
        &["--profile", "alice", "group", "add", "team", "nobody"],
    );
    assert!(!ok && stderr.contains("unknown_user"), "{stderr}");
}

async fn scrape(url: &str) -> String {
    let r = atlas_client::http_client()
        .unwrap()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// The sealed MLS state in a profile's database (the same key seals it, so an
/// older copy put back is what a device restored from an old backup holds).
async fn mls_blob(home: &std::path::Path, profile: &str, replace: Option<&[u8]>) -> Vec<u8> {
    use sqlx::Connection;
    let db = home.join("profiles").join(profile).join("state.db");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    if let Some(blob) = replace {
        sqlx::query("UPDATE kv SET v = $1 WHERE k = 'mls'")
            .bind(blob)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    sqlx::query_scalar("SELECT v FROM kv WHERE k = 'mls'")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// The runbook's recovery ladder on members that are really stuck: one whose
/// state fell behind its cursor (send-update repairs it), one that lost its
/// group state (rejoin-member repairs it).
async fn stuck_members_recover_with_send_update_and_rejoin(h: Harness) {
    let home = h.homes.path.clone();
    let url = h.url();
    let atlas = |args: &[&str]| support::atlas_ok(&home, args);
    for user in ["alice", "bob", "carol"] {
        atlas(&["--profile", user, "register", user, "--server", &url]);
    }
    let before_joining = mls_blob(&home, "bob", None).await;
    atlas(&["--profile", "alice", "group", "create", "team"]);
    atlas(&["--profile", "alice", "group", "add", "team", "bob"]);
    atlas(&["--profile", "alice", "group", "add", "team", "carol"]);
    atlas(&["--profile", "bob", "inbox"]);
    atlas(&["--profile", "carol", "inbox"]);
    let at_epoch_2 = mls_blob(&home, "bob", None).await;
    atlas(&["--profile", "carol", "group", "update", "team"]);
    atlas(&["--profile", "carol", "group", "update", "team"]);
    atlas(&["--profile", "bob", "inbox"]);

    // bob's MLS state goes back to epoch 2 while his cursor stays at epoch 4: the
    // next message is from an epoch ahead of him, so his device replays the
    // stored commits by itself and reads it.
    mls_blob(&home, "bob", Some(&at_epoch_2)).await;
    atlas(&[
        "--profile",
        "alice",
        "group",
        "send",
        "team",
        "can you read this",
    ]);
    let inbox = atlas(&["--profile", "bob", "inbox"]);
    assert!(
        inbox.contains("can you read this") && !inbox.contains("Unable to decrypt"),
        "{inbox}"
    );

    // Then bob goes offline while carol moves the group three epochs on: stuck, and visible.
    for _ in 0..3 {
        atlas(&["--profile", "carol", "group", "update", "team"]);
    }
    atlas(&[
        "--profile",
        "alice",
        "group",
        "send",
        "team",
        "while you were away",
    ]);
    atlas(&["--profile", "alice", "inbox"]);
    let token = support::operator_token(&h.database_url(), "mls");
    let op = |args: &[&str]| support::run_atlas(None, Some(&token), args);
    let (ok, shown, _) = op(&["mls", "show", "--group-id", "team", "--server", &url]);
    assert!(ok && shown.contains("team at epoch 7"), "{shown}");
    assert!(
        shown.contains("epoch 4  <- 3 epoch(s) behind"),
        "the stuck member is visible: {shown}"
    );
    // The group's series carry a salted hash of its name, which `mls show` names.
    let (ok, shown, _) = op(&[
        "mls",
        "show",
        "--group-id",
        "team",
        "--server",
        &url,
        "--json",
    ]);
    assert!(ok);
    let label = serde_json::from_str::<Value>(&shown).unwrap()["metrics_label"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(label.starts_with("g-") && label.len() == 18, "{label}");
    let metrics = scrape(&url).await;
    assert!(
        !metrics.contains("\"team\""),
        "the group name does not leave the server: {metrics}"
    );
    for (gauge, value) in [
        ("atlas_mls_group_epoch", 7),
        ("atlas_mls_group_member_epoch", 4),
        ("atlas_mls_group_members_behind", 1),
    ] {
        let series = format!("{gauge}{{group_id=\"{label}\"}} {value}\n");
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }

    // Option 1: send-update. On bob's next sync his device replays commits 5 to 7, then self-updates.
    let (ok, out, stderr) = op(&[
        "mls",
        "send-update",
        "--group-id",
        "team",
        "--member-id",
        "bob",
        "--server",
        &url,
    ]);
    assert!(
        ok && out.contains("requested update for bob/"),
        "{out}{stderr}"
    );
    let inbox = atlas(&["--profile", "bob", "inbox"]);
    assert!(inbox.contains("while you were away"), "{inbox}");
    let (_, shown, _) = op(&["mls", "show", "--group-id", "team", "--server", &url]);
    assert!(
        shown.contains("caught up from epoch 4 to 7, self-update created epoch 8"),
        "{shown}"
    );
    let bob_line = shown
        .lines()
        .find(|l| l.trim_start().starts_with("bob/"))
        .unwrap();
    assert!(
        shown.contains("team at epoch 8") && bob_line.ends_with("epoch 8"),
        "{shown}"
    );
    assert!(scrape(&url).await.contains(&format!(
        "atlas_mls_group_members_behind{{group_id=\"{label}\"}} 0\n"
    )));
    atlas(&[
        "--profile",
        "alice",
        "group",
        "send",
        "team",
        "welcome back",
    ]);
    assert!(atlas(&["--profile", "bob", "inbox"]).contains("welcome back"));

    // bob loses his group state altogether: catching up cannot help, rejoining does.
    mls_blob(&home, "bob", Some(&before_joining)).await;
    let (ok, _, _) = op(&[
        "mls",
        "send-update",
        "--group-id",
        "team",
        "--member-id",
        "bob",
        "--server",
        &url,
    ]);
    assert!(ok);
    atlas(&["--profile", "bob", "inbox"]);
    let (_, shown, _) = op(&["mls", "show", "--group-id", "team", "--server", &url]);
    assert!(
        shown.contains("update for bob/") && shown.contains("failed: no group team"),
        "{shown}"
    );

    // rejoin-member, waiting for the device: bob syncs meanwhile.
    let waiter = std::thread::spawn({
        let url = url.clone();
        let token = token.clone();
        move || {
            support::run_atlas(
                None,
                Some(&token),
                &[
                    "mls",
                    "rejoin-member",
                    "--group-id",
                    "team",
                    "--member-id",
                    "bob",
                    "--wait",
                    "30",
                    "--server",
                    &url,
                ],
            )
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(800));
    atlas(&["--profile", "bob", "inbox"]);
    let (ok, waited, stderr) = waiter.join().unwrap();
    assert!(ok, "{waited}{stderr}");
    assert!(
        waited.contains("rejoined by external commit at epoch 9"),
        "{waited}"
    );
    atlas(&["--profile", "alice", "group", "send", "team", "hello again"]);
    assert!(atlas(&["--profile", "bob", "inbox"]).contains("hello again"));
    assert!(atlas(&["--profile", "carol", "inbox"]).contains("hello again"));
    let members: Value = serde_json::from_str(&atlas(&[
        "--profile",
        "alice",
        "group",
        "members",
        "team",
        "--json",
    ]))
    .unwrap();
    let bobs = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["member_id"].as_str().unwrap().starts_with("bob/"))
        .count();
    assert_eq!(bobs, 1, "the rejoin replaced bob's old leaf: {members}");

    // Operator mistakes: unknown member, unknown group, a token without the scope.
    let (ok, _, stderr) = op(&[
        "mls",
        "send-update",
        "--group-id",
        "team",
        "--member-id",
        "mallory",
        "--server",
        &url,
    ]);
    assert!(!ok && stderr.contains("not_a_member"), "{stderr}");
    let (ok, _, stderr) = op(&[
        "mls",
        "rejoin-member",
        "--group-id",
        "nope",
        "--member-id",
        "bob",
        "--server",
        &url,
    ]);
    assert!(!ok && stderr.contains("unknown_group"), "{stderr}");
    let other = support::operator_token(&h.database_url(), "dpop");
    let (ok, _, stderr) = support::run_atlas(
        None,
        Some(&other),
        &["mls", "show", "--group-id", "team", "--server", &url],
    );
    assert!(!ok && stderr.contains("insufficient_scope"), "{stderr}");
}

/// Emergency rollback: a bad commit (carol adds mallory) is discarded, every
/// member rejoins, the group converges without mallory.
async fn rollback_epoch_discards_a_bad_commit_and_members_converge(h: Harness) {
    let home = h.homes.path.clone();
    let url = h.url();
    let atlas = |args: &[&str]| support::atlas_ok(&home, args);
    for user in ["alice", "bob", "carol", "mallory"] {
        atlas(&["--profile", user, "register", user, "--server", &url]);
    }
    atlas(&["--profile", "alice", "group", "create", "team"]);
    atlas(&["--profile", "alice", "group", "add", "team", "bob"]);
    atlas(&["--profile", "alice", "group", "add", "team", "carol"]);
    atlas(&["--profile", "bob", "inbox"]);
    atlas(&["--profile", "carol", "inbox"]);
    atlas(&["--profile", "carol", "group", "add", "team", "mallory"]);
    atlas(&["--profile", "mallory", "inbox"]);
    atlas(&[
        "--profile",
        "mallory",
        "group",
        "send",
        "team",
        "mallory was here",
    ]);
    assert!(atlas(&["--profile", "alice", "inbox"]).contains("mallory was here"));
    atlas(&["--profile", "bob", "inbox"]);

    let token = support::operator_token(&h.database_url(), "mls");
    // Without --yes the group id must be typed back; a wrong answer changes nothing.
    let mut refused = std::process::Command::new(env!("CARGO_BIN_EXE_atlas"))
        .args([
            "mls",
            "rollback-epoch",
            "--group-id",
            "team",
            "--target-epoch",
            "2",
            "--server",
            &url,
        ])
        .env("ATLAS_ADMIN_TOKEN", &token)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(refused.stdin.as_mut().unwrap(), b"not-team\n").unwrap();
    let refused = refused.wait_with_output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not confirmed; nothing changed"));
    let op = |args: &[&str]| support::run_atlas(None, Some(&token), args);
    let (_, shown, _) = op(&["mls", "show", "--group-id", "team", "--server", &url]);
    assert!(shown.contains("team at epoch 3"), "{shown}");
    let (ok, _, stderr) = op(&[
        "mls",
        "rollback-epoch",
        "--group-id",
        "team",
        "--target-epoch",
        "3",
        "--yes",
        "--server",
        &url,
    ]);
    assert!(
        !ok && stderr.contains("not below the current epoch"),
        "{stderr}"
    );

    let (ok, out, stderr) = op(&[
        "mls",
        "rollback-epoch",
        "--group-id",
        "team",
        "--target-epoch",
        "2",
        "--yes",
        "--server",
        &url,
    ]);
    assert!(ok, "{stderr}");
    assert!(out.contains("rolled team back from epoch 3 to 2"), "{out}");
    assert!(
        out.contains("mallory/") && out.contains("(removed)"),
        "{out}"
    );

    // Every member of epoch 2 rejoins on its next sync; the group moves on without mallory.
    for member in ["alice", "bob", "carol", "alice", "bob"] {
        atlas(&["--profile", member, "inbox"]);
    }
    let (_, shown, _) = op(&["mls", "show", "--group-id", "team", "--server", &url]);
    assert!(
        shown.contains("team at epoch 5"),
        "three rejoins after epoch 2: {shown}"
    );
    assert_eq!(
        shown.matches("rejoined by external commit").count(),
        3,
        "{shown}"
    );
    atlas(&[
        "--profile",
        "alice",
        "group",
        "send",
        "team",
        "after the rollback",
    ]);
    for reader in ["bob", "carol"] {
        assert!(
            atlas(&["--profile", reader, "inbox"]).contains("after the rollback"),
            "{reader}"
        );
    }
    assert!(!atlas(&["--profile", "mallory", "inbox"]).contains("after the rollback"));
    let (ok, _, stderr) = support::run_atlas(
        Some(&home),
        None,
        &[
            "--profile",
            "mallory",
            "group",
            "send",
            "team",
            "still here?",
        ],
    );
    assert!(!ok, "{stderr}");
    let members: Value = serde_json::from_str(&atlas(&[
        "--profile",
        "alice",
        "group",
        "members",
        "team",
        "--json",
    ]))
    .unwrap();
    let active: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["status"] == "active")
        .map(|m| m["member_id"].as_str().unwrap().split('/').next().unwrap())
        .collect();
    assert_eq!(active, ["alice", "bob", "carol"]);
}

/// An independent MLS implementation (mls-rs, not openmls) in an Atlas group:
/// it publishes a KeyPackage, joins from an openmls Welcome, reads and sends
/// application messages, and commits through the delivery service, which
/// validates its commit with openmls's public group. Both speak RFC 9420.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mls_rs_member_interoperates_through_the_service() {
    use mls_rs::group::ReceivedMessage;
    use mls_rs::identity::SigningIdentity;
    use mls_rs::identity::basic::{BasicCredential, BasicIdentityProvider};
    use mls_rs::mls_rs_codec::MlsEncode;
    use mls_rs::mls_rules::{CommitOptions, DefaultMlsRules};
    use mls_rs::{CipherSuite, CipherSuiteProvider, CryptoProvider, MlsMessage};

    let h = Harness::sqlite().await;
    let url = h.url();
    let mut alice = Member::new(&url, "alice").await;
    let ruth_http = RawDevice::register(&url, "ruth").await;
    let ruth_token = ruth_http.token().await;

    // ruth's mls-rs client: basic credential "ruth/RAW", the Atlas ciphersuite,
    // GroupInfo with the ratchet tree on every commit (the service needs it).
    let crypto = mls_rs_crypto_rustcrypto::RustCryptoProvider::default();
    let suite = crypto
        .cipher_suite_provider(CipherSuite::CURVE25519_AES128)
        .unwrap();
    let (secret, public) = suite.signature_key_generate().unwrap();
    let identity = SigningIdentity::new(
        BasicCredential::new(b"ruth/RAW".to_vec()).into_credential(),
        public,
    );
    let rules = DefaultMlsRules::new().with_commit_options(
        CommitOptions::new()
            .with_ratchet_tree_extension(true)
            .with_allow_external_commit(true),
    );
    let ruth = mls_rs::Client::builder()
        .identity_provider(BasicIdentityProvider)
        .crypto_provider(crypto)
        .mls_rules(rules)
        .signing_identity(identity, secret, CipherSuite::CURVE25519_AES128)
        .build();
    let kp_message = ruth
        .generate_key_package_message(Default::default(), Default::default(), None)
        .unwrap();
    let kp = kp_message
        .into_key_package()
        .unwrap()
        .mls_encode_to_vec()
        .unwrap();
    let checked = atlas_crypto::mls::check_key_package(&kp).unwrap();
    let ruth_binding = ruth_http
        .account
        .sign(&atlas_crypto::mls::signature_key_statement(
            &checked.member,
            &checked.signature_key,
        ));
    let (status, stock) = ruth_http
        .call(
            &ruth_token,
            "POST",
            "/mls/key-packages",
            Some(json!({
                "key_packages": [b64::encode_std(&kp)],
                "signature_key_binding": ruth_binding,
            })),
        )
        .await;
    assert_eq!(
        status, 200,
        "the service accepts mls-rs's KeyPackage: {stock}"
    );

    // alice (openmls) creates the group and adds ruth (mls-rs).
    alice.create_group("mixed").await;
    let claimed = b64::decode_std(&alice.claim("ruth").await).unwrap();
    let add = alice.mls.add("mixed", &[claimed]).unwrap();
    alice.commit(add).await;
    let (_, welcomes) = ruth_http
        .call(&ruth_token, "GET", "/groups/welcomes", None)
        .await;
    let welcome = b64::decode_std(welcomes["entries"][0]["body"].as_str().unwrap()).unwrap();
    let (mut group, _) = ruth
        .join_group(None, &MlsMessage::from_bytes(&welcome).unwrap(), None)
        .unwrap();
    assert_eq!(group.current_epoch(), 1);
    let mut seen = welcomes["entries"][0]["seq"].as_u64().unwrap();

    // openmls → mls-rs application message.
    alice.say("mixed", "hello from openmls").await;
    let (_, log) = ruth_http
        .call(
            &ruth_token,
            "GET",
            &format!("/groups/mixed/messages?after={seen}"),
            None,
        )
        .await;
    let entry = &log["entries"][0];
    seen = entry["seq"].as_u64().unwrap();
    let message =
        MlsMessage::from_bytes(&b64::decode_std(entry["body"].as_str().unwrap()).unwrap()).unwrap();
    match group.process_incoming_message(message).unwrap() {
        ReceivedMessage::ApplicationMessage(m) => assert_eq!(m.data(), b"hello from openmls"),
        other => panic!("{other:?}"),
    }

    // mls-rs commits through the service: validated by openmls's public group.
    let commit = group.commit(Vec::new()).unwrap();
    let group_info = commit.external_commit_group_info.clone().unwrap();
    let (status, accepted) = ruth_http
        .call(
            &ruth_token,
            "POST",
            "/groups/mixed/commits",
            Some(json!({
                "commit": b64::encode_std(commit.commit_message.to_bytes().unwrap()),
                "group_info": b64::encode_std(group_info.to_bytes().unwrap()),
            })),
        )
        .await;
    assert_eq!(
        status, 201,
        "the service accepts mls-rs's commit: {accepted}"
    );
    group.apply_pending_commit().unwrap();
    assert_eq!(group.current_epoch(), 2);
    let incoming = alice.sync("mixed").await;
    assert!(
        matches!(incoming.as_slice(), [Incoming::Commit { epoch: 2, .. }]),
        "{incoming:?}"
    );

    // mls-rs → openmls application message in the new epoch.
    let sent = group
        .encrypt_application_message(b"hello from mls-rs", Vec::new())
        .unwrap();
    let (status, body) = ruth_http
        .call(
            &ruth_token,
            "POST",
            "/groups/mixed/messages",
            Some(json!({"message": b64::encode_std(sent.to_bytes().unwrap())})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(texts(&alice.sync("mixed").await), ["hello from mls-rs"]);

    // And back: an openmls commit that mls-rs processes.
    let update = alice.mls.self_update("mixed").unwrap();
    alice.commit(update).await;
    let (_, log) = ruth_http
        .call(
            &ruth_token,
            "GET",
            &format!("/groups/mixed/messages?after={seen}"),
            None,
        )
        .await;
    let last_commit = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|e| e["kind"] == "commit")
        .unwrap();
    let message =
        MlsMessage::from_bytes(&b64::decode_std(last_commit["body"].as_str().unwrap()).unwrap())
            .unwrap();
    assert!(matches!(
        group.process_incoming_message(message).unwrap(),
        ReceivedMessage::Commit(_)
    ));
    assert_eq!(group.current_epoch(), 3);
}

/// Five members through adds, removes, updates and concurrent commits, while
/// one of them is offline for a dozen epochs and then catches up from the log.
async fn five_members_churn_while_one_is_offline(h: Harness) {
    let url = h.url();
    let mut alice = Member::new(&url, "alice").await;
    let mut others = Vec::new();
    for user in ["bob", "carol", "dave", "erin"] {
        others.push(Member::new(&url, user).await);
    }
    alice.create_group("five").await;
    let mut packages = Vec::new();
    for user in ["bob", "carol", "dave", "erin"] {
        packages.push(b64::decode_std(&alice.claim(user).await).unwrap());
    }
    let add = alice.mls.add("five", &packages).unwrap();
    assert_eq!(alice.commit(add).await, 1);
    for m in others.iter_mut() {
        m.join().await;
    }
    let [bob, carol, dave, erin] = &mut others[..] else {
        unreachable!()
    };
    // erin goes offline now.
    for round in 0..4 {
        // Concurrent updates from bob and carol: one wins, the other rebases.
        let (b, c) = (
            bob.mls.self_update("five").unwrap(),
            carol.mls.self_update("five").unwrap(),
        );
        let (rb, rc) = tokio::join!(bob.post_commit(&b), carol.post_commit(&c));
        assert_eq!(
            [rb.0, rc.0].iter().filter(|s| **s == 201).count(),
            1,
            "round {round}"
        );
        let (winner, loser) = if rb.0 == 201 {
            (&mut *bob, &mut *carol)
        } else {
            (&mut *carol, &mut *bob)
        };
        winner.mls.confirm_commit("five").unwrap();
        loser.mls.discard_commit("five").unwrap();
        loser.sync("five").await;
        let retry = loser.mls.self_update("five").unwrap();
        loser.commit(retry).await;
        winner.sync("five").await;
        alice.sync("five").await;
        dave.sync("five").await;
        // carol removes dave, alice adds him back from his last-resort KeyPackage.
        let remove = carol
            .mls
            .remove("five", &[dave.mls.member().clone()])
            .unwrap();
        carol.commit(remove).await;
        dave.sync("five").await;
        alice.sync("five").await;
        bob.sync("five").await;
        let kp = b64::decode_std(&alice.claim("dave").await).unwrap();
        let readd = alice.mls.add("five", &[kp]).unwrap();
        alice.commit(readd).await;
        dave.join().await;
        bob.sync("five").await;
        carol.sync("five").await;
        alice.say("five", &format!("round {round} done")).await;
    }
    let current = group_epoch(&alice, "five").await;
    assert_eq!(current, 1 + 4 * 4, "four epochs per round");
    // erin was away for all of it: she replays every commit in order and reads every message.
    let caught_up = erin.sync("five").await;
    assert_eq!(erin.mls.epoch("five").unwrap(), current);
    assert_eq!(
        texts(&caught_up),
        [
            "round 0 done",
            "round 1 done",
            "round 2 done",
            "round 3 done"
        ]
    );
    for m in [&mut *bob, &mut *carol, &mut *dave] {
        m.sync("five").await;
    }
    let (_, view) = alice.call("GET", "/groups/five", None).await;
    let epochs: Vec<(String, u64, String)> = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["member_id"]
                    .as_str()
                    .unwrap()
                    .split('/')
                    .next()
                    .unwrap()
                    .to_owned(),
                m["epoch"].as_u64().unwrap(),
                m["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, u64, String)> = ["alice", "bob", "carol", "dave", "erin"]
        .iter()
        .map(|u| (u.to_string(), current, "active".to_string()))
        .collect();
    assert_eq!(epochs, expected, "everyone acknowledged the last epoch");
    // No commit is pending once everyone acknowledged.
    let store = atlas_store::open(&h.database_url()).await.unwrap();
    let members = store.group_members("five").await.unwrap();
    assert!(members.iter().all(|m| m.epoch == current));
}

/// Group activity is pushed: a listening device is nudged over its WebSocket,
/// accepts the Welcome and reads new group messages without polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_activity_is_pushed_to_listening_devices() {
    let h = Harness::sqlite().await;
    let url = h.url();
    let alice =
        atlas_client::Client::register(&h.profile("alice"), &url, "alice".parse().unwrap(), None)
            .await
            .unwrap();
    let bob = std::sync::Arc::new(
        atlas_client::Client::register(&h.profile("bob"), &url, "bob".parse().unwrap(), None)
            .await
            .unwrap(),
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let listener = tokio::spawn({
        let bob = bob.clone();
        async move {
            bob.listen_all(
                |_| {},
                Some(move |m| tx.send(m).unwrap()),
                std::future::pending(),
            )
            .await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    alice.group_create("live").await.unwrap();
    alice
        .group_add("live", &"bob".parse().unwrap())
        .await
        .unwrap();
    alice.group_send("live", "pushed to you").await.unwrap();
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let m: atlas_client::GroupReceived = rx.recv().await.unwrap();
            if m.text.is_some() {
                return m;
            }
        }
    })
    .await
    .expect("bob was nudged and read the message");
    assert_eq!(
        (got.group.as_str(), got.text.as_deref()),
        ("live", Some("pushed to you"))
    );
    listener.abort();
}
