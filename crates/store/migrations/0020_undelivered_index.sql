-- A device's undelivered messages, for its inbox and its acknowledgements:
-- delivered rows stay (their receipts refer to them) and would otherwise be
-- walked again by every acknowledgement, which grows with the device's history.
CREATE INDEX messages_undelivered ON messages (recipient_id, recipient_device_id, seq)
    WHERE delivered_at IS NULL;
-- The primary key (message_id, recipient_device_id) already serves lookups by message id.
DROP INDEX messages_by_id;
