-- Schema version 1 of the PostgreSQL store. `{schema}` is replaced by the builder's schema
-- name (checked to be [a-z_][a-z0-9_]*, at most 40 bytes) before this runs, inside the
-- migration's transaction (schema.rs). Every write of a session is one of the functions
-- below or one plain statement, so each is atomic and costs one round trip.

-- One row per session key (the SHA-256 of a token, never the token):
-- * a live record: `version` and `record` set, `forward_to` null;
-- * a rotated-away key: `version` and `record` null, `forward_to` the key it moved to, for
--   FORWARD_TTL (delete follows it; loads and writes find no record);
-- * `expires_at` is the database's clock plus the layer's ttl: rows past it are absent to
--   every read and write, and the clean-up task deletes them in bounded batches.
CREATE TABLE {schema}.sessions (
    key bytea PRIMARY KEY,
    version bigint,
    record bytea,
    user_id text,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    forward_to bytea,
    guest boolean GENERATED ALWAYS AS (user_id IS NULL AND version IS NOT NULL) STORED,
    CHECK ((version IS NULL) = (record IS NULL)),
    CHECK (version IS NOT NULL OR forward_to IS NOT NULL)
);
-- The clean-up's order and the budget's eviction order.
CREATE INDEX sessions_expires_at ON {schema}.sessions (expires_at);
-- The per-user index: a user's sessions, oldest first.
CREATE INDEX sessions_user ON {schema}.sessions (user_id, created_at, key) WHERE user_id IS NOT NULL;
-- The guest sessions, earliest deadline (least recently active) first.
CREATE INDEX sessions_guests ON {schema}.sessions (expires_at) WHERE guest;

-- How many guest rows there are (live or expired but not yet cleaned up), kept by a
-- trigger, so that a guest `create` checks the budget without counting rows. Its one row is
-- also the lock that serialises guest creates.
CREATE TABLE {schema}.guest_count (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    n bigint NOT NULL
);
INSERT INTO {schema}.guest_count VALUES (true, 0);

CREATE FUNCTION {schema}.count_guests() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    d bigint := 0;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.guest THEN d := d - 1; END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.guest THEN d := d + 1; END IF;
    IF d <> 0 THEN
        UPDATE {schema}.guest_count SET n = n + d;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER count_guests AFTER INSERT OR UPDATE OR DELETE ON {schema}.sessions
    FOR EACH ROW EXECUTE FUNCTION {schema}.count_guests();

-- Every change or removal of a row that has not expired tells the other instances, in the
-- same transaction (NOTIFY is delivered at commit, and never for a rolled-back write):
-- payload "<instance id>:<key hex>", the instance id being the writing connection's
-- `tsg.instance` setting (the store sets it at connect time; empty for anyone else).
CREATE FUNCTION {schema}.notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.expires_at > now() THEN
        PERFORM pg_notify('{schema}_inval',
            coalesce(current_setting('tsg.instance', true), '') || ':' || encode(OLD.key, 'hex'));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER notify_change AFTER UPDATE OR DELETE ON {schema}.sessions
    FOR EACH ROW EXECUTE FUNCTION {schema}.notify_change();

-- create: inserts a record under a key that holds no unexpired row. o_status 1 applied, 0
-- conflict; o_ended: the guests evicted to make room. A guest first takes the budget's
-- lock; at the capacity it evicts the guests with the earliest deadlines (at most
-- p_evict), never a user's session, and skips guests another write holds (SKIP LOCKED:
-- guest creates never wait on a session row while holding the budget's lock).
CREATE FUNCTION {schema}.create_session(
    p_key bytea, p_version bigint, p_record bytea, p_user text, p_created timestamptz,
    p_ttl_ms bigint, p_capacity bigint, p_evict int,
    OUT o_status int, OUT o_ended bytea[]
) LANGUAGE plpgsql AS $$
DECLARE
    guests bigint;
BEGIN
    o_ended := '{}';
    PERFORM 1 FROM {schema}.sessions s WHERE s.key = p_key AND s.expires_at > now();
    IF FOUND THEN o_status := 0; RETURN; END IF;
    IF p_user IS NULL THEN
        SELECT g.n INTO guests FROM {schema}.guest_count g FOR UPDATE;
        IF guests >= p_capacity THEN
            WITH gone AS (
                DELETE FROM {schema}.sessions s WHERE s.key IN (
                    SELECT v.key FROM {schema}.sessions v WHERE v.guest
                    ORDER BY v.expires_at LIMIT least(guests - p_capacity + 1, p_evict)
                    FOR UPDATE SKIP LOCKED)
                RETURNING s.key)
            SELECT coalesce(array_agg(gone.key), '{}') INTO o_ended FROM gone;
        END IF;
    END IF;
    DELETE FROM {schema}.sessions s WHERE s.key = p_key AND s.expires_at <= now();
    INSERT INTO {schema}.sessions (key, version, record, user_id, created_at, expires_at)
        VALUES (p_key, p_version, p_record, p_user, p_created,
                now() + p_ttl_ms * interval '1 millisecond')
        ON CONFLICT (key) DO NOTHING;
    o_status := CASE WHEN FOUND THEN 1 ELSE 0 END;
END $$;

-- rotate: moves the record at p_old (at version p_expected) to p_new (which must hold no
-- unexpired row); p_old is left forwarding to p_new for p_forward_ms. 1 applied, 0 conflict.
CREATE FUNCTION {schema}.rotate_session(
    p_old bytea, p_expected bigint, p_new bytea, p_version bigint, p_record bytea,
    p_user text, p_created timestamptz, p_ttl_ms bigint, p_forward_ms bigint
) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM {schema}.sessions s
        WHERE s.key = p_old AND s.version = p_expected AND s.expires_at > now() FOR UPDATE;
    IF NOT FOUND THEN RETURN 0; END IF;
    DELETE FROM {schema}.sessions s WHERE s.key = p_new AND s.expires_at <= now();
    INSERT INTO {schema}.sessions (key, version, record, user_id, created_at, expires_at)
        VALUES (p_new, p_version, p_record, p_user, p_created,
                now() + p_ttl_ms * interval '1 millisecond')
        ON CONFLICT (key) DO NOTHING;
    IF NOT FOUND THEN RETURN 0; END IF;
    UPDATE {schema}.sessions s
        SET version = NULL, record = NULL, user_id = NULL, forward_to = p_new,
            expires_at = now() + p_forward_ms * interval '1 millisecond'
        WHERE s.key = p_old;
    RETURN 1;
END $$;

-- login: under the user's lock (a transaction-scoped advisory lock on p_lock, derived from
-- the schema and the user id), checks the limit, rotates p_old (or creates without one)
-- into p_new, and with p_evict ends the user's oldest sessions beyond p_limit.
-- o_status 1 applied, 0 conflict, 2 limit reached; o_ended: the evicted keys.
CREATE FUNCTION {schema}.login_session(
    p_old bytea, p_expected bigint, p_new bytea, p_version bigint, p_record bytea,
    p_user text, p_created timestamptz, p_ttl_ms bigint, p_forward_ms bigint,
    p_limit bigint, p_evict boolean, p_lock bigint,
    OUT o_status int, OUT o_ended bytea[]
) LANGUAGE plpgsql AS $$
DECLARE
    others bigint;
BEGIN
    o_ended := '{}';
    PERFORM pg_advisory_xact_lock(p_lock);
    -- Counted only under a limit, which bounds it (a user without one may have any number).
    IF p_limit IS NOT NULL THEN
        SELECT count(*) INTO others FROM {schema}.sessions s
            WHERE s.user_id = p_user AND s.version IS NOT NULL AND s.expires_at > now()
              AND s.key <> p_new AND s.key IS DISTINCT FROM p_old;
    END IF;
    IF p_limit IS NOT NULL AND NOT p_evict AND others >= p_limit THEN
        o_status := 2; RETURN;
    END IF;
    IF p_old IS NOT NULL THEN
        PERFORM 1 FROM {schema}.sessions s
            WHERE s.key = p_old AND s.version = p_expected AND s.expires_at > now() FOR UPDATE;
        IF NOT FOUND THEN o_status := 0; RETURN; END IF;
    END IF;
    DELETE FROM {schema}.sessions s WHERE s.key = p_new AND s.expires_at <= now();
    INSERT INTO {schema}.sessions (key, version, record, user_id, created_at, expires_at)
        VALUES (p_new, p_version, p_record, p_user, p_created,
                now() + p_ttl_ms * interval '1 millisecond')
        ON CONFLICT (key) DO NOTHING;
    IF NOT FOUND THEN o_status := 0; RETURN; END IF;
    IF p_old IS NOT NULL THEN
        UPDATE {schema}.sessions s
            SET version = NULL, record = NULL, user_id = NULL, forward_to = p_new,
                expires_at = now() + p_forward_ms * interval '1 millisecond'
            WHERE s.key = p_old;
    END IF;
    IF p_limit IS NOT NULL AND p_evict AND others + 1 > greatest(p_limit, 1) THEN
        -- Oldest first, in the answer too (DELETE ... RETURNING keeps no order).
        SELECT coalesce(array_agg(v.key ORDER BY v.created_at, v.key), '{}') INTO o_ended
        FROM (
            SELECT v.key, v.created_at FROM {schema}.sessions v
            WHERE v.user_id = p_user AND v.version IS NOT NULL AND v.expires_at > now()
              AND v.key <> p_new
            ORDER BY v.created_at, v.key LIMIT others + 1 - greatest(p_limit, 1)
            FOR UPDATE
        ) v;
        DELETE FROM {schema}.sessions s WHERE s.key = ANY (o_ended);
    END IF;
    o_status := 1;
END $$;

-- delete: removes p_key and, while what it removed was an unexpired forwarding row, the key
-- that row names (at most p_max_hops hops), up to and including the live record reached.
-- o_live: whether a live record was removed; o_ended: the removed keys other than p_key.
-- Notifies for p_key even when it is gone already (a delete is usually a revocation, and
-- another instance may still hold it).
CREATE FUNCTION {schema}.delete_session(
    p_key bytea, p_max_hops int,
    OUT o_live boolean, OUT o_ended bytea[]
) LANGUAGE plpgsql AS $$
DECLARE
    at bytea := p_key;
    hop int := 0;
    r record;
BEGIN
    o_live := false;
    o_ended := '{}';
    PERFORM pg_notify('{schema}_inval',
        coalesce(current_setting('tsg.instance', true), '') || ':' || encode(p_key, 'hex'));
    LOOP
        DELETE FROM {schema}.sessions s WHERE s.key = at
            RETURNING s.version, s.forward_to, s.expires_at > now() AS live INTO r;
        IF NOT FOUND THEN EXIT; END IF;
        IF hop > 0 THEN o_ended := o_ended || at; END IF;
        IF NOT r.live THEN EXIT; END IF;
        IF r.version IS NOT NULL THEN o_live := true; EXIT; END IF;
        IF r.forward_to IS NULL OR hop >= p_max_hops THEN EXIT; END IF;
        at := r.forward_to;
        hop := hop + 1;
    END LOOP;
END $$;
