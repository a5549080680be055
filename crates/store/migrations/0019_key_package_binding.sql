-- A device's signature, by its certified Ed25519 key, of the MLS signature key
-- in its KeyPackage: what lets a group adder refuse a KeyPackage the server
-- made up for a certified device. Rows from before have none and no longer
-- count in the stock, so their devices publish bound ones.
ALTER TABLE mls_key_packages ADD COLUMN binding TEXT
