ALTER TABLE bots DROP COLUMN disclosure;
