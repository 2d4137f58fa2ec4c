-- When an API key last authenticated a request (unix milliseconds, to the
-- minute; NULL: never). Written in batches, at most once a minute per key
-- and replica (auth.LastUsed), never on the request path.

ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;
