-- The web origins (scheme://host[:port]) whose pages may open a bot's chat
-- widget, as a JSON array; empty: any.
ALTER TABLE bots ADD COLUMN widget_origins TEXT NOT NULL DEFAULT '[]';
