DROP TABLE events;
DROP TABLE notes;
DROP TABLE api_tokens;
DROP TABLE sessions;
