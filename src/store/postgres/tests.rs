//! Unit tests of the pure parts: schema names, lock ids, statements.

use super::builder::redact;
use super::names::{check_schema, lock_id, Names};
use super::statements::Statements;
use super::PostgresStore;

#[test]
fn only_plain_identifiers_are_schemas() {
    for good in ["tsg", "_x", "app_sessions_2", &"a".repeat(40)] {
        assert!(check_schema(good).is_ok(), "{good:?}");
    }
    for bad in [
        "",
        "1abc",
        "Tsg",
        "a-b",
        "a.b",
        "a b",
        "x\"; DROP TABLE users; --",
        "pg_catalog",
        &"a".repeat(41),
        "tsg\u{e9}",
    ] {
        assert!(check_schema(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn statements_name_the_schema_and_nothing_else() {
    let s = Statements::new("my_schema");
    for sql in [
        &s.load, &s.create, &s.update, &s.rotate, &s.login, &s.delete,
    ] {
        assert!(sql.contains("my_schema."), "{sql}");
        assert!(!sql.contains("{schema}"), "{sql}");
    }
}

#[test]
fn user_locks_differ_by_user_and_schema() {
    let a = Names::new("a".into(), "i".into()).unwrap();
    let b = Names::new("b".into(), "i".into()).unwrap();
    assert_eq!(a.user_lock("alice"), a.user_lock("alice"));
    assert_ne!(a.user_lock("alice"), a.user_lock("bob"));
    assert_ne!(a.user_lock("alice"), b.user_lock("alice"));
    // The length prefix keeps ("login", "a\0b") and ("login\0a", "b") apart.
    assert_ne!(lock_id("login", "a\0b"), lock_id("login\0a", "b"));
}

#[test]
fn a_logged_builder_shows_no_password() {
    for (url, shown) in [
        (
            "postgres://app:s3cret@db:5432/app",
            "postgres://app:***@db:5432/app",
        ),
        ("postgres://app@db/app", "postgres://app@db/app"),
        (
            "postgres://db/app?password=s3cret&x=1",
            "postgres://db/app?password=***&x=1",
        ),
        (
            "host=db user=app password=s3cret dbname=app",
            "host=db user=app password=*** dbname=app",
        ),
        ("postgres://a:p%40ss@db/app", "postgres://a:***@db/app"),
    ] {
        assert_eq!(redact(url), shown);
    }
    let debug = format!(
        "{:?}",
        PostgresStore::builder("postgres://app:s3cret@db/app")
    );
    assert!(!debug.contains("s3cret"), "{debug}");
}
