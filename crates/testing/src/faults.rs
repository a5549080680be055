//! Fault injection for the runbook's failure modes, and message helpers.
use crate::*;
use atlas_crypto::olm::OlmAccount;

/// Marks every one-time key of `user` consumed, so the next sender gets the fallback key.
pub async fn exhaust_one_time_keys(h: &Harness, user: &str) {
    // Written to the database: the server's per-user claim budget would hand out
    // the fallback key long before a stranger's claims could use them all up.
    let consumed = h
        .sql(&format!(
            "UPDATE user_keys SET status = 'consumed' WHERE user_id = '{user}' \
             AND key_type = 'one_time' AND status = 'active'"
        ))
        .await;
    assert!(consumed > 0, "{user} had one-time keys");
}

/// Fault injection for "key rotated before the message arrived": `to`'s
/// one-time keys are claimed, `from` sends `text` to its fallback key, and
/// `to` rotates the fallback key twice (Olm keeps one previous) before reading.
pub async fn send_to_rotated_key(
    h: &Harness,
    from: &atlas_client::Client,
    to: &atlas_client::Client,
    text: &str,
) -> atlas_proto::MessageId {
    exhaust_one_time_keys(h, to.user_id().as_str()).await;
    let sent = from.messages().send_text(to.user_id(), text).await.unwrap();
    to.keys().rotate_fallback().await.unwrap();
    to.keys().rotate_fallback().await.unwrap();
    sent.message_id
}

/// Fault injection: replaces every active one-time key of `user` in
/// `user_keys` by a key the user never made; returns how many.
pub async fn corrupt_one_time_keys(h: &Harness, user: &str) -> u64 {
    let foreign = OlmAccount::new().curve25519();
    h.sql(&format!(
        "UPDATE user_keys SET public_key = '{foreign}' WHERE user_id = '{user}' AND key_type = 'one_time' AND status = 'active'"
    ))
    .await
}

/// Fault injection: the server delivers the last of `user`'s undelivered
/// messages first (it takes the lowest sequence number, the others move up).
pub async fn deliver_last_first(h: &Harness, user: &str) {
    h.sql(&format!(
        "UPDATE messages SET seq = seq + 1000 WHERE recipient_id = '{user}' AND delivered_at IS NULL"
    ))
    .await;
    h.sql(&format!(
        "UPDATE messages SET seq = (SELECT MIN(seq) - 1000 FROM messages WHERE recipient_id = '{user}' AND seq > 1000) \
         WHERE recipient_id = '{user}' AND seq = (SELECT MAX(seq) FROM messages WHERE recipient_id = '{user}')"
    ))
    .await;
    h.sql(&format!(
        "UPDATE messages SET seq = seq - 999 WHERE recipient_id = '{user}' AND seq > 1000"
    ))
    .await;
}

/// Fault injection: `profile`'s stored session with `peer` is overwritten by
/// its session with `other` (a desynchronised ratchet).
pub async fn desync_session(h: &Harness, profile: &str, peer: &str, other: &str) {
    let replaced = profile_sql(
        &h.profile(profile),
        &format!(
            "UPDATE sessions SET pickle = (SELECT pickle FROM sessions WHERE peer_user = '{other}') WHERE peer_user = '{peer}'"
        ),
    )
    .await;
    assert_eq!(replaced, 1);
}

/// Sends "m1" … "mN" from `from` to `to`; returns the message ids in order.
pub async fn send_numbered(
    from: &atlas_client::Client,
    to: &atlas_client::Client,
    n: usize,
) -> Vec<atlas_proto::MessageId> {
    let mut ids = Vec::with_capacity(n);
    for i in 1..=n {
        let sent = from
            .messages()
            .send_text(to.user_id(), &format!("m{i}"))
            .await
            .unwrap();
        ids.push(sent.message_id);
    }
    ids
}

/// Fault injection for "Double Ratchet desynchronised": `carol` writes to
/// `bob` (so bob holds a second session), bob's session with `alice` is
/// overwritten by that one, and `alice` sends; returns that send, which bob
/// cannot read. Each client's profile is named after its user.
pub async fn send_on_desynced_session(
    h: &Harness,
    alice: &atlas_client::Client,
    bob: &atlas_client::Client,
    carol: &atlas_client::Client,
) -> atlas_proto::api::SendResponse {
    carol
        .messages()
        .send_text(bob.user_id(), "from carol")
        .await
        .unwrap();
    bob.messages().sync().await.unwrap();
    desync_session(
        h,
        bob.user_id().as_str(),
        alice.user_id().as_str(),
        carol.user_id().as_str(),
    )
    .await;
    alice
        .messages()
        .send_text(bob.user_id(), "after the desync")
        .await
        .unwrap()
}
