ALTER TABLE bots DROP COLUMN widget_origins;
