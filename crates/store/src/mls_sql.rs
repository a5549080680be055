//! [`crate::GroupStore`] in the SQL both backends share (see `sql.rs`).

/// Implements [`crate::GroupStore`] for a backend struct with `writer` and `reader` pools.
macro_rules! impl_group_store {
    ($store:ty, $db:ty, skip_locked = $skip_locked:literal, lock_rows = $lock_rows:literal) => {
        impl $store {
            async fn key_package_stock(conn: &mut <$db as sqlx::Database>::Connection, user_id: &str, device_id: &str) -> $crate::StoreResult<$crate::KeyPackageCounts> {
                use sqlx::Row;
                let row = sqlx::query(
                    "SELECT \
                       (SELECT COUNT(*) FROM mls_key_packages WHERE user_id = $1 AND device_id = $2 AND status = 'active' AND last_resort = 0 AND binding IS NOT NULL) AS n, \
                       (SELECT COUNT(*) FROM mls_key_packages WHERE user_id = $1 AND device_id = $2 AND status = 'active' AND last_resort = 1 AND binding IS NOT NULL) AS lr",
                )
                .bind(user_id)
                .bind(device_id)
                .fetch_one(&mut *conn)
                .await?;
                Ok($crate::KeyPackageCounts {
                    available: row.try_get::<i64, _>("n")?.max(0) as u64,
                    last_resort: row.try_get::<i64, _>("lr")? > 0,
                })
            }

            async fn insert_action(conn: &mut <$db as sqlx::Database>::Connection, a: &$crate::MemberAction) -> $crate::StoreResult<()> {
                sqlx::query(
                    "INSERT INTO mls_member_actions (action_id, group_id, member_id, action, requested_by, requested_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&a.action_id)
                .bind(&a.group_id)
                .bind(&a.member_id)
                .bind(&a.action)
                .bind(&a.requested_by)
                .bind(a.requested_at)
                .execute(&mut *conn)
                .await?;
                Ok(())
            }

            fn member_action(row: &<$db as sqlx::Database>::Row) -> $crate::StoreResult<$crate::MemberAction> {
                use sqlx::Row;
                Ok($crate::MemberAction {
                    action_id: row.try_get("action_id")?,
                    group_id: row.try_get("group_id")?,
                    member_id: row.try_get("member_id")?,
                    action: row.try_get("action")?,
                    requested_by: row.try_get("requested_by")?,
                    requested_at: row.try_get("requested_at")?,
                    done_at: row.try_get("done_at")?,
                    outcome: row.try_get("outcome")?,
                })
            }

            fn group_message(row: &<$db as sqlx::Database>::Row) -> $crate::StoreResult<$crate::GroupMessageRecord> {
                use sqlx::Row;
                Ok($crate::GroupMessageRecord {
                    group_id: row.try_get("group_id")?,
                    seq: row.try_get::<i64, _>("seq")?.max(0) as u64,
                    kind: row.try_get("kind")?,
                    epoch: row.try_get::<i64, _>("epoch")?.max(0) as u64,
                    sender_id: row.try_get("sender_id")?,
                    body: row.try_get("body")?,
                    created_at: row.try_get("created_at")?,
                })
            }

            async fn insert_log(conn: &mut <$db as sqlx::Database>::Connection, entry: &$crate::GroupMessageRecord) -> $crate::StoreResult<()> {
                sqlx::query("INSERT INTO mls_messages (group_id, seq, kind, epoch, sender_id, body, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                    .bind(&entry.group_id)
                    .bind(i64::try_from(entry.seq).unwrap_or(i64::MAX))
                    .bind(&entry.kind)
                    .bind(i64::try_from(entry.epoch).unwrap_or(i64::MAX))
                    .bind(&entry.sender_id)
                    .bind(&entry.body)
                    .bind(entry.created_at)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            }

            /// Recomputes one group's epoch gauges (see migration 0018) inside the
            /// transaction that changed its epoch or its members.
            async fn refresh_gauges(conn: &mut <$db as sqlx::Database>::Connection, group_id: &str) -> $crate::StoreResult<()> {
                sqlx::query(
                    "UPDATE mls_groups SET \
                       min_member_epoch = COALESCE((SELECT MIN(m.epoch) FROM mls_group_members m \
                         WHERE m.group_id = mls_groups.group_id AND m.status = 'active'), current_epoch), \
                       members_behind = (SELECT COUNT(*) FROM mls_group_members m \
                         WHERE m.group_id = mls_groups.group_id AND m.status = 'active' AND m.epoch + 2 < mls_groups.current_epoch), \
                       epoch_lag = current_epoch - COALESCE((SELECT MIN(m.epoch) FROM mls_group_members m \
                         WHERE m.group_id = mls_groups.group_id AND m.status = 'active'), current_epoch) \
                     WHERE group_id = $1",
                )
                .bind(group_id)
                .execute(&mut *conn)
                .await?;
                Ok(())
            }

            async fn upsert_member(conn: &mut <$db as sqlx::Database>::Connection, group_id: &str, member_id: &str, joined_epoch: i64, now: time::OffsetDateTime) -> $crate::StoreResult<()> {
                // Until it acknowledges its join epoch, a member counts as one epoch behind.
                sqlx::query(
                    "INSERT INTO mls_group_members (group_id, member_id, epoch, last_commit, status, joined_epoch, updated_at) \
                     VALUES ($1, $2, $3, NULL, 'active', $4, $5) \
                     ON CONFLICT (group_id, member_id) DO UPDATE SET epoch = $3, last_commit = NULL, status = 'active', joined_epoch = $4, updated_at = $5, removed_seq = NULL",
                )
                .bind(group_id)
                .bind(member_id)
                .bind((joined_epoch - 1).max(0))
                .bind(joined_epoch)
                .bind(now)
                .execute(&mut *conn)
                .await?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::GroupStore for $store {
            async fn upload_key_packages(&self, user_id: &atlas_proto::UserId, device_id: &atlas_proto::DeviceId, packages: &[$crate::NewKeyPackage], now: time::OffsetDateTime) -> $crate::StoreResult<$crate::KeyPackageCounts> {
                let mut tx = self.writer.begin().await?;
                Self::registered_device(&mut tx, user_id.as_str(), device_id.as_str()).await?;
                if packages.iter().any(|p| p.binding.is_some()) {
                    // Bound packages supersede those published before bindings existed.
                    sqlx::query("UPDATE mls_key_packages SET status = 'replaced' WHERE user_id = $1 AND device_id = $2 AND status = 'active' AND binding IS NULL")
                        .bind(user_id.as_str())
                        .bind(device_id.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
                if packages.iter().any(|p| p.last_resort) {
                    sqlx::query("UPDATE mls_key_packages SET status = 'replaced' WHERE user_id = $1 AND device_id = $2 AND last_resort = 1 AND status = 'active'")
                        .bind(user_id.as_str())
                        .bind(device_id.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
                for p in packages {
                    sqlx::query(
                        "INSERT INTO mls_key_packages (user_id, device_id, key_package_ref, key_package, last_resort, status, created_at, binding) \
                         VALUES ($1, $2, $3, $4, $5, 'active', $6, $7) ON CONFLICT DO NOTHING",
                    )
                    .bind(user_id.as_str())
                    .bind(device_id.as_str())
                    .bind(&p.key_package_ref)
                    .bind(&p.bytes)
                    .bind(i64::from(p.last_resort))
                    .bind(now)
                    .bind(p.binding.as_deref())
                    .execute(&mut *tx)
                    .await?;
                }
                let counts = Self::key_package_stock(&mut tx, user_id.as_str(), device_id.as_str()).await?;
                tx.commit().await?;
                Ok(counts)
            }

            async fn key_package_counts(&self, user_id: &atlas_proto::UserId, device_id: &atlas_proto::DeviceId) -> $crate::StoreResult<$crate::KeyPackageCounts> {
                let mut conn = self.reader.acquire().await?;
                Self::key_package_stock(&mut conn, user_id.as_str(), device_id.as_str()).await
            }

            async fn claim_key_packages(&self, user_id: &atlas_proto::UserId, only: &[atlas_proto::DeviceId], now: time::OffsetDateTime) -> $crate::StoreResult<Vec<(atlas_proto::DeviceId, Option<$crate::ClaimedKeyPackageRecord>)>> {
                let mut tx = self.writer.begin().await?;
                let devices = Self::device_rows(&mut tx, user_id.as_str(), None).await?;
                if devices.is_empty() && !Self::user_exists(&mut tx, user_id.as_str()).await? {
                    return Err($crate::StoreError::UnknownUser);
                }
                let mut out = Vec::new();
                for device in devices.into_iter().filter(|d| d.status == "active" && (only.is_empty() || only.contains(&d.keys.device_id))) {
                    let did = device.keys.device_id.as_str();
                    let ordinary: Option<(Vec<u8>, Option<String>)> = sqlx::query_as(concat!(
                        "UPDATE mls_key_packages SET status = 'claimed', claimed_at = $1 \
                         WHERE user_id = $2 AND device_id = $3 AND status = 'active' AND last_resort = 0 AND key_package_ref = ( \
                           SELECT key_package_ref FROM mls_key_packages WHERE user_id = $2 AND device_id = $3 AND status = 'active' \
                           AND last_resort = 0 ORDER BY created_at, key_package_ref LIMIT 1",
                        $skip_locked,
                        ") RETURNING key_package, binding"
                    ))
                    .bind(now)
                    .bind(user_id.as_str())
                    .bind(did)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let package = match ordinary {
                        Some(p) => Some(p),
                        None => sqlx::query_as(
                            "SELECT key_package, binding FROM mls_key_packages WHERE user_id = $1 AND device_id = $2 \
                             AND status = 'active' AND last_resort = 1 ORDER BY created_at DESC LIMIT 1",
                        )
                        .bind(user_id.as_str())
                        .bind(did)
                        .fetch_optional(&mut *tx)
                        .await?,
                    };
                    let package = package.map(|(bytes, binding)| $crate::ClaimedKeyPackageRecord { bytes, binding });
                    out.push((device.keys.device_id, package));
                }
                tx.commit().await?;
                Ok(out)
            }

            async fn create_group(&self, g: &$crate::NewGroup) -> $crate::StoreResult<()> {
                let mut tx = self.writer.begin().await?;
                let inserted = sqlx::query(
                    "INSERT INTO mls_groups (group_id, current_epoch, last_epoch_change, created_by, created_at, public_state, next_seq) \
                     VALUES ($1, 0, $2, $3, $2, $4, 0) ON CONFLICT DO NOTHING",
                )
                .bind(&g.group_id)
                .bind(g.now)
                .bind(&g.creator)
                .bind(&g.public_state)
                .execute(&mut *tx)
                .await?;
                if inserted.rows_affected() == 0 {
                    return Err($crate::StoreError::GroupExists);
                }
                sqlx::query(
                    "INSERT INTO mls_group_members (group_id, member_id, epoch, last_commit, status, joined_epoch, updated_at) \
                     VALUES ($1, $2, 0, NULL, 'active', 0, $3)",
                )
                .bind(&g.group_id)
                .bind(&g.creator)
                .bind(g.now)
                .execute(&mut *tx)
                .await?;
                sqlx::query("INSERT INTO mls_epochs (group_id, epoch, public_state, group_info, created_at) VALUES ($1, 0, $2, $3, $4)")
                    .bind(&g.group_id)
                    .bind(&g.public_state)
                    .bind(&g.group_info)
                    .bind(g.now)
                    .execute(&mut *tx)
                    .await?;
                Self::refresh_gauges(&mut tx, &g.group_id).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn group(&self, group_id: &str) -> $crate::StoreResult<Option<$crate::GroupRecord>> {
                use sqlx::Row;
                let row = sqlx::query("SELECT group_id, current_epoch, last_epoch_change, created_by, public_state FROM mls_groups WHERE group_id = $1")
                    .bind(group_id)
                    .fetch_optional(&self.reader)
                    .await?;
                row.map(|row| {
                    Ok($crate::GroupRecord {
                        group_id: row.try_get("group_id")?,
                        current_epoch: row.try_get::<i64, _>("current_epoch")?.max(0) as u64,
                        last_epoch_change: row.try_get("last_epoch_change")?,
                        created_by: row.try_get("created_by")?,
                        public_state: row.try_get("public_state")?,
                    })
                })
                .transpose()
            }

            async fn sequence_commit(&self, c: &$crate::NewCommit) -> $crate::StoreResult<$crate::CommitOutcome> {
                let from = i64::try_from(c.from_epoch).unwrap_or(i64::MAX);
                let new_epoch = from.saturating_add(1);
                let entries: i64 = if c.welcome.is_some() { 2 } else { 1 };
                let mut tx = self.writer.begin().await?;
                // The compare-and-set that makes the first valid commit of an epoch the only one.
                let next: Option<i64> = sqlx::query_scalar(
                    "UPDATE mls_groups SET current_epoch = $1, last_epoch_change = $2, public_state = $3, next_seq = next_seq + $4 \
                     WHERE group_id = $5 AND current_epoch = $6 RETURNING next_seq",
                )
                .bind(new_epoch)
                .bind(c.now)
                .bind(&c.public_state)
                .bind(entries)
                .bind(&c.group_id)
                .bind(from)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(next) = next else {
                    let current: Option<i64> = sqlx::query_scalar("SELECT current_epoch FROM mls_groups WHERE group_id = $1")
                        .bind(&c.group_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    let current = current.ok_or($crate::StoreError::UnknownGroup)?;
                    tx.commit().await?;
                    let winner = self.commit_of_epoch(&c.group_id, c.from_epoch.saturating_add(1)).await?;
                    return Ok($crate::CommitOutcome::Lost { current_epoch: current.max(0) as u64, winner });
                };
                let seq = next - entries + 1;
                sqlx::query("INSERT INTO mls_commits (commit_id, group_id, sender_id, epoch, status, seq, created_at) VALUES ($1, $2, $3, $4, 'pending', $5, $6)")
                    .bind(&c.commit_id)
                    .bind(&c.group_id)
                    .bind(&c.sender_id)
                    .bind(new_epoch)
                    .bind(seq)
                    .bind(c.now)
                    .execute(&mut *tx)
                    .await?;
                // A rolled-back epoch may come again: its old row gives way.
                sqlx::query("DELETE FROM mls_epochs WHERE group_id = $1 AND epoch >= $2")
                    .bind(&c.group_id)
                    .bind(new_epoch)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO mls_epochs (group_id, epoch, public_state, group_info, created_at) VALUES ($1, $2, $3, $4, $5)")
                    .bind(&c.group_id)
                    .bind(new_epoch)
                    .bind(&c.public_state)
                    .bind(&c.group_info)
                    .bind(c.now)
                    .execute(&mut *tx)
                    .await?;
                let entry = |seq: i64, kind: &str, body: &[u8]| $crate::GroupMessageRecord {
                    group_id: c.group_id.clone(),
                    seq: seq.max(0) as u64,
                    kind: kind.to_owned(),
                    epoch: new_epoch.max(0) as u64,
                    sender_id: c.sender_id.clone(),
                    body: body.to_vec(),
                    created_at: c.now,
                };
                Self::insert_log(&mut tx, &entry(seq, $crate::kind::COMMIT, &c.commit)).await?;
                for member in &c.removed {
                    sqlx::query("UPDATE mls_group_members SET status = 'removed', updated_at = $1, removed_seq = $4 WHERE group_id = $2 AND member_id = $3")
                        .bind(c.now)
                        .bind(&c.group_id)
                        .bind(member)
                        .bind(seq)
                        .execute(&mut *tx)
                        .await?;
                }
                for member in &c.added {
                    Self::upsert_member(&mut tx, &c.group_id, member, new_epoch, c.now).await?;
                }
                if let Some((recipients, welcome)) = &c.welcome {
                    Self::insert_log(&mut tx, &entry(seq + 1, $crate::kind::WELCOME, welcome)).await?;
                    for member in recipients {
                        sqlx::query("INSERT INTO mls_welcomes (member_id, group_id, seq) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                            .bind(member)
                            .bind(&c.group_id)
                            .bind(seq + 1)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                Self::refresh_gauges(&mut tx, &c.group_id).await?;
                tx.commit().await?;
                Ok($crate::CommitOutcome::Accepted { seq: seq.max(0) as u64 })
            }

            async fn commit_of_epoch(&self, group_id: &str, epoch: u64) -> $crate::StoreResult<Option<$crate::GroupMessageRecord>> {
                sqlx::query(
                    "SELECT group_id, seq, kind, epoch, sender_id, body, created_at FROM mls_messages \
                     WHERE group_id = $1 AND kind = 'commit' AND epoch = $2 AND rolled_back = 0 ORDER BY seq DESC LIMIT 1",
                )
                .bind(group_id)
                .bind(i64::try_from(epoch).unwrap_or(i64::MAX))
                .fetch_optional(&self.reader)
                .await?
                .map(|row| Self::group_message(&row))
                .transpose()
            }

            async fn append_group_message(&self, group_id: &str, epoch: u64, sender_id: &str, body: &[u8], now: time::OffsetDateTime) -> $crate::StoreResult<u64> {
                let mut tx = self.writer.begin().await?;
                let status: Option<String> = sqlx::query_scalar("SELECT status FROM mls_group_members WHERE group_id = $1 AND member_id = $2")
                    .bind(group_id)
                    .bind(sender_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if status.as_deref() != Some("active") {
                    let exists: Option<i64> = sqlx::query_scalar("SELECT current_epoch FROM mls_groups WHERE group_id = $1")
                        .bind(group_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    return Err(if exists.is_some() { $crate::StoreError::NotAGroupMember } else { $crate::StoreError::UnknownGroup });
                }
                let seq: i64 = sqlx::query_scalar("UPDATE mls_groups SET next_seq = next_seq + 1 WHERE group_id = $1 RETURNING next_seq")
                    .bind(group_id)
                    .fetch_one(&mut *tx)
                    .await?;
                let entry = $crate::GroupMessageRecord {
                    group_id: group_id.to_owned(),
                    seq: seq.max(0) as u64,
                    kind: $crate::kind::APPLICATION.to_owned(),
                    epoch,
                    sender_id: sender_id.to_owned(),
                    body: body.to_vec(),
                    created_at: now,
                };
                Self::insert_log(&mut tx, &entry).await?;
                tx.commit().await?;
                Ok(seq.max(0) as u64)
            }

            async fn group_messages(&self, group_id: &str, after: u64, up_to: Option<u64>, limit: u32) -> $crate::StoreResult<Vec<$crate::GroupMessageRecord>> {
                let rows = sqlx::query(
                    "SELECT group_id, seq, kind, epoch, sender_id, body, created_at FROM mls_messages \
                     WHERE group_id = $1 AND seq > $2 AND seq <= $4 AND kind <> 'welcome' AND rolled_back = 0 ORDER BY seq LIMIT $3",
                )
                .bind(group_id)
                .bind(i64::try_from(after).unwrap_or(i64::MAX))
                .bind(i64::from(limit))
                .bind(up_to.map_or(i64::MAX, |u| i64::try_from(u).unwrap_or(i64::MAX)))
                .fetch_all(&self.reader)
                .await?;
                rows.iter().map(Self::group_message).collect()
            }

            async fn welcomes(&self, member_id: &str) -> $crate::StoreResult<Vec<$crate::GroupMessageRecord>> {
                let rows = sqlx::query(
                    "SELECT m.group_id, m.seq, m.kind, m.epoch, m.sender_id, m.body, m.created_at FROM mls_welcomes w \
                     JOIN mls_messages m ON m.group_id = w.group_id AND m.seq = w.seq \
                     JOIN mls_group_members gm ON gm.group_id = w.group_id AND gm.member_id = w.member_id AND gm.status = 'active' \
                     WHERE w.member_id = $1 AND m.rolled_back = 0 \
                     ORDER BY m.created_at, m.seq",
                )
                .bind(member_id)
                .fetch_all(&self.reader)
                .await?;
                rows.iter().map(Self::group_message).collect()
            }

            async fn group_info(&self, group_id: &str, epoch: Option<u64>) -> $crate::StoreResult<Option<(u64, Vec<u8>)>> {
                let epoch = epoch.map(|e| i64::try_from(e).unwrap_or(i64::MAX));
                let row: Option<(i64, Vec<u8>)> = sqlx::query_as(
                    "SELECT epoch, group_info FROM mls_epochs WHERE group_id = $1 AND ($2 IS NULL OR epoch = $2) ORDER BY epoch DESC LIMIT 1",
                )
                .bind(group_id)
                .bind(epoch)
                .fetch_optional(&self.reader)
                .await?;
                Ok(row.map(|(e, info)| (e.max(0) as u64, info)))
            }

            async fn acknowledge_epoch(&self, group_id: &str, member_id: &str, epoch: u64, now: time::OffsetDateTime) -> $crate::StoreResult<()> {
                let mut tx = self.writer.begin().await?;
                let current: Option<i64> = sqlx::query_scalar(concat!("SELECT current_epoch FROM mls_groups WHERE group_id = $1", $lock_rows))
                    .bind(group_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                let current = current.ok_or($crate::StoreError::UnknownGroup)?;
                let acknowledged = i64::try_from(epoch).unwrap_or(i64::MAX).min(current);
                let status: Option<String> = sqlx::query_scalar(concat!(
                    "SELECT status FROM mls_group_members WHERE group_id = $1 AND member_id = $2",
                    $lock_rows
                ))
                .bind(group_id)
                .bind(member_id)
                .fetch_optional(&mut *tx)
                .await?;
                if status.as_deref() != Some("active") {
                    return Err($crate::StoreError::NotAGroupMember);
                }
                // Only forward: an old epoch acknowledged again (or made up) cannot drag the
                // member back and make the group look out of step.
                sqlx::query(
                    "UPDATE mls_group_members SET epoch = $1, updated_at = $2, last_commit = \
                       (SELECT commit_id FROM mls_commits WHERE group_id = $3 AND epoch = $1 AND status <> 'rolled_back' ORDER BY seq DESC LIMIT 1) \
                     WHERE group_id = $3 AND member_id = $4 AND epoch < $1",
                )
                .bind(acknowledged)
                .bind(now)
                .bind(group_id)
                .bind(member_id)
                .execute(&mut *tx)
                .await?;
                // Its Welcomes of epochs it has reached are served no more.
                sqlx::query(
                    "DELETE FROM mls_welcomes WHERE member_id = $1 AND group_id = $2 AND seq IN \
                       (SELECT seq FROM mls_messages WHERE group_id = $2 AND kind = 'welcome' AND epoch <= $3)",
                )
                .bind(member_id)
                .bind(group_id)
                .bind(acknowledged)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE mls_commits SET status = 'acknowledged' WHERE group_id = $1 AND status = 'pending' \
                     AND epoch <= (SELECT MIN(epoch) FROM mls_group_members WHERE group_id = $1 AND status = 'active')",
                )
                .bind(group_id)
                .execute(&mut *tx)
                .await?;
                Self::refresh_gauges(&mut tx, group_id).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn group_members(&self, group_id: &str) -> $crate::StoreResult<Vec<$crate::GroupMemberRecord>> {
                use sqlx::Row;
                let rows = sqlx::query(
                    "SELECT member_id, epoch, last_commit, status, joined_epoch, updated_at, removed_seq FROM mls_group_members \
                     WHERE group_id = $1 ORDER BY member_id",
                )
                .bind(group_id)
                .fetch_all(&self.reader)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok($crate::GroupMemberRecord {
                            member_id: row.try_get("member_id")?,
                            epoch: row.try_get::<i64, _>("epoch")?.max(0) as u64,
                            last_commit: row.try_get("last_commit")?,
                            status: row.try_get("status")?,
                            joined_epoch: row.try_get::<i64, _>("joined_epoch")?.max(0) as u64,
                            updated_at: row.try_get("updated_at")?,
                            removed_seq: row.try_get::<Option<i64>, _>("removed_seq")?.map(|s| s.max(0) as u64),
                        })
                    })
                    .collect()
            }

            async fn request_member_action(&self, a: &$crate::MemberAction) -> $crate::StoreResult<()> {
                let mut conn = self.writer.acquire().await?;
                Self::insert_action(&mut conn, a).await
            }

            async fn pending_member_actions(&self, member_id: &str) -> $crate::StoreResult<Vec<$crate::MemberAction>> {
                let rows = sqlx::query(
                    "SELECT action_id, group_id, member_id, action, requested_by, requested_at, done_at, outcome \
                     FROM mls_member_actions WHERE member_id = $1 AND done_at IS NULL ORDER BY requested_at, action_id",
                )
                .bind(member_id)
                .fetch_all(&self.reader)
                .await?;
                rows.iter().map(Self::member_action).collect()
            }

            async fn group_member_actions(&self, group_id: &str) -> $crate::StoreResult<Vec<$crate::MemberAction>> {
                let rows = sqlx::query(
                    "SELECT action_id, group_id, member_id, action, requested_by, requested_at, done_at, outcome \
                     FROM mls_member_actions WHERE group_id = $1 ORDER BY requested_at DESC, action_id",
                )
                .bind(group_id)
                .fetch_all(&self.reader)
                .await?;
                rows.iter().map(Self::member_action).collect()
            }

            async fn complete_member_action(&self, action_id: &str, member_id: &str, outcome: &str, now: time::OffsetDateTime) -> $crate::StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE mls_member_actions SET done_at = $1, outcome = $2 WHERE action_id = $3 AND member_id = $4 AND done_at IS NULL",
                )
                .bind(now)
                .bind(outcome)
                .bind(action_id)
                .bind(member_id)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn epoch_state(&self, group_id: &str, epoch: u64) -> $crate::StoreResult<Option<Vec<u8>>> {
                Ok(sqlx::query_scalar("SELECT public_state FROM mls_epochs WHERE group_id = $1 AND epoch = $2")
                    .bind(group_id)
                    .bind(i64::try_from(epoch).unwrap_or(i64::MAX))
                    .fetch_optional(&self.reader)
                    .await?)
            }

            async fn rollback_group(&self, r: &$crate::Rollback) -> $crate::StoreResult<()> {
                let target = i64::try_from(r.target_epoch).unwrap_or(i64::MAX);
                let mut tx = self.writer.begin().await?;
                let state: Option<Vec<u8>> = sqlx::query_scalar("SELECT public_state FROM mls_epochs WHERE group_id = $1 AND epoch = $2")
                    .bind(&r.group_id)
                    .bind(target)
                    .fetch_optional(&mut *tx)
                    .await?;
                let state = state.ok_or($crate::StoreError::UnknownGroup)?;
                let moved = sqlx::query(
                    "UPDATE mls_groups SET current_epoch = $1, public_state = $2, last_epoch_change = $3 WHERE group_id = $4 AND current_epoch = $5",
                )
                .bind(target)
                .bind(&state)
                .bind(r.now)
                .bind(&r.group_id)
                .bind(i64::try_from(r.from_epoch).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await?;
                if moved.rows_affected() == 0 {
                    return Err($crate::StoreError::UnknownGroup);
                }
                sqlx::query("UPDATE mls_commits SET status = 'rolled_back' WHERE group_id = $1 AND epoch > $2")
                    .bind(&r.group_id)
                    .bind(target)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE mls_messages SET rolled_back = 1 WHERE group_id = $1 AND epoch > $2")
                    .bind(&r.group_id)
                    .bind(target)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM mls_epochs WHERE group_id = $1 AND epoch > $2")
                    .bind(&r.group_id)
                    .bind(target)
                    .execute(&mut *tx)
                    .await?;
                // Members of the discarded epochs see nothing logged after the rollback.
                sqlx::query(
                    "UPDATE mls_group_members SET status = 'removed', updated_at = $1, \
                     removed_seq = (SELECT next_seq FROM mls_groups WHERE group_id = $2) WHERE group_id = $2",
                )
                .bind(r.now)
                .bind(&r.group_id)
                .execute(&mut *tx)
                .await?;
                for member in &r.members_at_target {
                    sqlx::query(
                        "UPDATE mls_group_members SET status = 'active', updated_at = $1, removed_seq = NULL, \
                         epoch = CASE WHEN epoch > $2 THEN $2 ELSE epoch END WHERE group_id = $3 AND member_id = $4",
                    )
                    .bind(r.now)
                    .bind(target)
                    .bind(&r.group_id)
                    .bind(member)
                    .execute(&mut *tx)
                    .await?;
                }
                for a in &r.rejoin {
                    Self::insert_action(&mut tx, a).await?;
                }
                Self::refresh_gauges(&mut tx, &r.group_id).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn group_epoch_health(&self, limit: u32) -> $crate::StoreResult<Vec<$crate::GroupEpochHealth>> {
                // Maintained by `refresh_gauges`: an index walk, not a join of every group and member.
                let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
                    "SELECT group_id, current_epoch, min_member_epoch, members_behind FROM mls_groups \
                     ORDER BY epoch_lag DESC, group_id LIMIT $1",
                )
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(group_id, current, min, behind)| $crate::GroupEpochHealth {
                        group_id,
                        current_epoch: current.max(0) as u64,
                        min_member_epoch: min.max(0) as u64,
                        members_behind: behind.max(0) as u64,
                    })
                    .collect())
            }
        }
    };
}

pub(crate) use impl_group_store;
