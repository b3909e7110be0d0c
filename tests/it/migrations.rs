//! Both migration folders produce the same schema, and migrating is idempotent.

use std::collections::BTreeSet;

use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};
use diesel_async::RunQueryDsl;
use store::db::{Db, DbConn};
use store::db_run;

use crate::both_backends;
use crate::common::{Backend, TestDb};

/// A column as both backends can describe it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Column {
    table: String,
    name: String,
    family: &'static str,
    not_null: bool,
}

/// Maps a declared type to a portable family, so `BIGINT` on both sides
/// agrees while `TEXT` vs `BIGINT` does not.
fn family(declared: &str) -> &'static str {
    let t = declared.to_ascii_lowercase();
    if t.contains("timestamp") {
        "timestamp"
    } else if t.contains("bigint") || t == "int8" {
        "bigint"
    } else if t.contains("int") {
        "integer"
    } else if t.contains("bool") {
        "boolean"
    } else if t.contains("double") || t.contains("real") || t.contains("float") {
        "double"
    } else if t.contains("bytea") || t.contains("blob") {
        "binary"
    } else if t.contains("text") || t.contains("char") {
        "text"
    } else {
        "other"
    }
}

#[derive(QueryableByName)]
struct PgColumn {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
    #[diesel(sql_type = Text)]
    data_type: String,
    #[diesel(sql_type = Text)]
    is_nullable: String,
}

#[derive(QueryableByName)]
struct SqliteColumn {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    type_: String,
    #[diesel(sql_type = Integer)]
    notnull: i32,
    #[diesel(sql_type = Integer)]
    pk: i32,
}

async fn columns(db: &Db) -> BTreeSet<Column> {
    let mut conn = db.get().await.expect("connection");
    match &mut conn {
        DbConn::Postgres(conn) => {
            let rows: Vec<PgColumn> = diesel::sql_query(
                "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text \
                 FROM information_schema.columns \
                 WHERE table_schema = 'public' AND table_name <> '__diesel_schema_migrations'",
            )
            .load(&mut **conn)
            .await
            .expect("information_schema");
            rows.into_iter()
                .map(|r| Column {
                    family: family(&r.data_type),
                    not_null: r.is_nullable == "NO",
                    table: r.table_name,
                    name: r.column_name,
                })
                .collect()
        }
        DbConn::Sqlite(conn) => {
            let rows: Vec<SqliteColumn> = diesel::sql_query(
                "SELECT m.name AS table_name, p.name, p.type AS type_, p.\"notnull\", p.pk \
                 FROM sqlite_master m, pragma_table_info(m.name) p \
                 WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' \
                 AND m.name <> '__diesel_schema_migrations'",
            )
            .load(&mut **conn)
            .await
            .expect("pragma_table_info");
            rows.into_iter()
                .map(|r| Column {
                    // `INTEGER PRIMARY KEY` is SQLite's rowid: 64 bits, like
                    // PostgreSQL's BIGSERIAL.
                    family: if r.pk == 1 && r.type_.eq_ignore_ascii_case("integer") {
                        "bigint"
                    } else {
                        family(&r.type_)
                    },
                    // SQLite reports key columns of composite keys as nullable
                    // unless declared NOT NULL; PostgreSQL makes them NOT NULL.
                    not_null: r.notnull == 1 || r.pk > 0,
                    table: r.table_name,
                    name: r.name,
                })
                .collect()
        }
    }
}

async fn migrated(backend: Backend) -> Option<(TestDb, Db)> {
    let test_db = TestDb::new(backend).await?;
    let settings = test_db.settings();
    let db = Db::connect(&settings.database).await.expect("connect");
    let applied = db.migrate(&settings.database).await.expect("migrate");
    assert!(!applied.is_empty(), "a fresh database gets migrations");
    Some((test_db, db))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_folders_produce_the_same_tables_and_columns() {
    let Some((_pg_guard, pg)) = migrated(Backend::Postgres).await else {
        return;
    };
    let (_sqlite_guard, sqlite) = migrated(Backend::Sqlite).await.expect("sqlite");
    let pg_columns = columns(&pg).await;
    let sqlite_columns = columns(&sqlite).await;
    assert!(pg_columns.len() > 50, "schema looks empty: {pg_columns:?}");
    let only_pg: Vec<_> = pg_columns.difference(&sqlite_columns).collect();
    let only_sqlite: Vec<_> = sqlite_columns.difference(&pg_columns).collect();
    assert!(
        only_pg.is_empty() && only_sqlite.is_empty(),
        "migrations disagree\n only in postgres: {only_pg:#?}\n only in sqlite: {only_sqlite:#?}"
    );
}

async fn migrating_twice_is_a_no_op(test_db: TestDb) {
    let settings = test_db.settings();
    let db = Db::connect(&settings.database).await.expect("connect");
    let first = db.migrate(&settings.database).await.expect("first");
    assert!(!first.is_empty());
    let second = db.migrate(&settings.database).await.expect("second");
    assert!(second.is_empty(), "second run applied {second:?}");
    // The schema answers the diesel DSL on this backend.
    let mut conn = db.get().await.expect("conn");
    let count: i64 = db_run!(conn: {
        store::schema::workspaces::table
            .count()
            .get_result(conn)
            .await
            .expect("count")
    });
    assert_eq!(count, 0);
}

async fn nodes_migrating_at_once_all_succeed(test_db: TestDb) {
    let settings = test_db.settings();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let settings = settings.database.clone();
        tasks.push(tokio::spawn(async move {
            let db = Db::connect(&settings).await.expect("connect");
            db.migrate(&settings).await
        }));
    }
    let mut applied = 0;
    for task in tasks {
        let versions = task.await.expect("task").expect("every node migrates");
        applied += versions.len();
    }
    assert_eq!(
        applied,
        crate::common::migration_count(),
        "each migration is applied once, by one node"
    );
}

both_backends! {
    migrate_twice => migrating_twice_is_a_no_op;
    concurrent_migrations => nodes_migrating_at_once_all_succeed;
}
