//! MLS groups through the delivery service: real openmls members over HTTP,
//! first-commit-wins per epoch (also across two server processes on one
//! PostgreSQL), and bad handshake input refused without touching the group.

use atlas_crypto::mls::{Incoming, MlsDevice};
use atlas_proto::b64;
use atlas_testing::{Harness, RawDevice};
use serde_json::{Value, json};

/// A registered device with an MLS identity and a token.
pub(super) struct Member {
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

pub(super) fn texts(incoming: &[Incoming]) -> Vec<String> {
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

pub(super) async fn group_epoch(member: &Member, group: &str) -> u64 {
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

/// Three replicas on one PostgreSQL and one Redis: concurrent commits of one
/// epoch, each sent to a different replica, still have exactly one winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_winner_per_epoch_across_three_replicas() {
    let mut h = Harness::postgres().await;
    h.stop().await;
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let mut config = h.config();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.redis_url = Some(
            std::env::var("ATLAS_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        );
        replicas.push(atlas_server::start(config).await.unwrap());
    }
    let url = replicas[0].public_url.clone();
    let mut alice = Member::new(&url, "alice").await;
    alice.create_group("team").await;
    let mut others = Vec::new();
    for (i, user) in ["bob", "carol", "dave", "erin"].iter().enumerate() {
        // The members are spread over the replicas.
        others.push(Member::new(&replicas[i % 3].public_url, user).await);
    }
    let mut packages = Vec::new();
    for m in &others {
        packages.push(b64::decode_std(&alice.claim(&m.http.user_id).await).unwrap());
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
    for replica in replicas {
        replica.stop().await;
    }
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
    alice.groups().create("live").await.unwrap();
    alice
        .groups()
        .add("live", &"bob".parse().unwrap())
        .await
        .unwrap();
    alice.groups().send("live", "pushed to you").await.unwrap();
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

on_both_backends!(
    groups_add_talk_race_and_remove,
    five_members_churn_while_one_is_offline,
);

mod cli;
mod interop;
mod membership;
mod recovery;
