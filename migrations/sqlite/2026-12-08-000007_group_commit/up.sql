-- Nothing to change on SQLite: its group commit runs the batch's statements
-- in one blocking call (store/src/models/inbound.rs). On PostgreSQL this
-- migration adds the function that stores a batch in one round trip; the
-- folder keeps both backends at the same migration version.
SELECT 1;
