//! Clean-up shared by the API tests and the `spoor` binary's tests (included by path in
//! both: they are separate test crates).

use std::time::Duration;

/// Drops a test's schema. A running server's sync may still be writing into it: PostgreSQL
/// then reports a deadlock between the drop's table locks and the sync's insert (it aborts
/// one of the two), so the drop is retried rather than failing the test over its clean-up.
pub async fn drop_schema(c: &tokio_postgres::Client, schema: &str) {
    let sql = format!("DROP SCHEMA \"{schema}\" CASCADE");
    for _ in 0..50 {
        match c.batch_execute(&sql).await {
            Ok(()) => return,
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("{sql}: {e}"),
        }
    }
    panic!("{sql}: still deadlocked after 50 tries");
}
