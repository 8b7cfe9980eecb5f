//! The SQL the operations send (the schema itself and its functions are in `sql/`), with the
//! schema name filled in once when the store is built. The arguments of each statement are
//! built in one place, its operation in `ops`.

/// Replaces `{schema}` in `sql` (the name is checked by the builder: a plain identifier).
pub(super) fn with_schema(sql: &str, schema: &str) -> String {
    sql.replace("{schema}", schema)
}

const LOAD: &str = "SELECT record FROM {schema}.sessions \
     WHERE key = $1 AND version IS NOT NULL AND expires_at > now()";

const CREATE: &str = "SELECT o_status, o_ended FROM {schema}.create_session(\
     $1::bytea, $2::bigint, $3::bytea, $4::text, $5::timestamptz, $6::bigint, $7::bigint, $8::int)";

// Compare-and-set in one statement: the row must exist, be unexpired and at `expected`.
const UPDATE: &str = "UPDATE {schema}.sessions \
     SET version = $3, record = $4, user_id = $5, created_at = $6, \
         expires_at = now() + $7::bigint * interval '1 millisecond' \
     WHERE key = $1 AND version = $2 AND expires_at > now()";

const ROTATE: &str = "SELECT {schema}.rotate_session(\
     $1::bytea, $2::bigint, $3::bytea, $4::bigint, $5::bytea, $6::text, $7::timestamptz, \
     $8::bigint, $9::bigint)";

const LOGIN: &str = "SELECT o_status, o_ended FROM {schema}.login_session(\
     $1::bytea, $2::bigint, $3::bytea, $4::bigint, $5::bytea, $6::text, $7::timestamptz, \
     $8::bigint, $9::bigint, $10::bigint, $11::boolean, $12::bigint)";

const DELETE: &str = "SELECT o_live, o_ended FROM {schema}.delete_session($1::bytea, $2::int)";

// Served by the index (user_id, created_at, key): reads at most `limit` rows.
const USER_SESSIONS: &str = "SELECT key, record FROM {schema}.sessions \
     WHERE user_id = $1 AND version IS NOT NULL AND expires_at > now() \
     ORDER BY created_at, key LIMIT $2";

// One bounded batch of the clean-up; rows another transaction holds are left for later.
const SWEEP: &str = "DELETE FROM {schema}.sessions WHERE key IN (\
     SELECT key FROM {schema}.sessions WHERE expires_at <= now() \
     ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)";

/// Every statement, for one schema.
#[derive(Debug)]
pub(super) struct Statements {
    pub(super) load: String,
    pub(super) create: String,
    pub(super) update: String,
    pub(super) rotate: String,
    pub(super) login: String,
    pub(super) delete: String,
    pub(super) user_sessions: String,
    pub(super) sweep: String,
}

impl Statements {
    pub(super) fn new(schema: &str) -> Self {
        let s = |sql| with_schema(sql, schema);
        Statements {
            load: s(LOAD),
            create: s(CREATE),
            update: s(UPDATE),
            rotate: s(ROTATE),
            login: s(LOGIN),
            delete: s(DELETE),
            user_sessions: s(USER_SESSIONS),
            sweep: s(SWEEP),
        }
    }
}
