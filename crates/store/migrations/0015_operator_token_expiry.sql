-- Operator tokens expire (atlas admin token create --expires-in): a token left
-- in a shell history or a ticket stops working by itself.
ALTER TABLE operator_tokens ADD COLUMN expires_at TIMESTAMPTZ
