-- The opening line of a bot's first reply that says the customer talks to
-- a bot; NULL: the server's answer.disclosure, '': none.
ALTER TABLE bots ADD COLUMN disclosure TEXT;
