//! The estate's description in the database, on SQLite and on PostgreSQL: an estate.json left by an earlier version
//! is imported once (and kept), and concurrent updates from several nodes lose nothing.

#[path = "../../tests/support/postgres.rs"]
mod postgres;

use orchestrator::db::Db;
use orchestrator::estate::{Created, Estate};
use orchestrator::lifecycle::State;

async fn databases() -> Vec<Db> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}?mode=rwc", dir.keep().join("estate.db").display());
    let mut out = Vec::new();
    for url in [sqlite_url, postgres::Cluster::get().database()] {
        let db = Db::connect(&url, 8).await.unwrap();
        db.migrate().await.unwrap();
        out.push(db);
    }
    out
}

#[tokio::test]
async fn an_estate_json_from_an_earlier_version_is_imported_once_and_kept() {
    for db in databases().await {
        let root = tempfile::tempdir().unwrap();
        let estate = Estate::new(root.path(), db.clone());
        // What an earlier version left: its disks and its estate.json, with web01 protected to on-premises.
        let mut doc = orchestrator::demo::seed(&estate).unwrap();
        doc.items.iter_mut().find(|r| r.item.id == "web01").unwrap().item.state = State::ProtectedToPrimary;
        std::fs::write(root.path().join("estate.json"), serde_json::to_vec_pretty(&doc).unwrap()).unwrap();

        assert!(!estate.exists().await.unwrap());
        let how = estate.create_once(|_| panic!("an existing estate.json must be imported, not replaced")).await;
        assert_eq!(how.unwrap(), Some(Created::Imported));
        assert_eq!(estate.load().await.unwrap(), doc, "{:?}: the import is the document", db.backend);
        assert!(!root.path().join("estate.json").exists());
        assert!(root.path().join("estate.json.imported").is_file(), "the old file is kept, renamed");
        // A second start, or a second node, finds the estate and creates nothing.
        let again = Estate::new(root.path(), db.clone());
        assert_eq!(again.create_once(|_| panic!("created twice")).await.unwrap(), None);
        let state: String =
            sqlx::query_scalar("select state from estate_items where id = 'web01'").fetch_one(&db.pool).await.unwrap();
        assert_eq!(state, "protected-to-primary", "the lifecycle state is a column");
    }
}

#[tokio::test]
async fn concurrent_updates_from_several_nodes_lose_nothing_and_a_failed_one_changes_nothing() {
    for db in databases().await {
        let root = tempfile::tempdir().unwrap();
        let first = Estate::new(root.path(), db.clone());
        first.create_once(orchestrator::demo::seed).await.unwrap();
        let v0 = first.version().await.unwrap();
        // Two "nodes": separate pools on one database, 20 read-modify-writes each, all at once.
        let second = Estate::new(root.path(), Db::connect(&db_url(&db), 8).await.unwrap());
        let t = std::time::Instant::now();
        let bumps = (0..40).map(|i| {
            let e = if i % 2 == 0 { first.clone() } else { second.clone() };
            async move {
                e.update(|d| {
                    d.items.iter_mut().find(|r| r.item.id == "web01").unwrap().last_cycle_at += 1;
                    Ok(())
                })
                .await
                .unwrap()
            }
        });
        futures_util::future::join_all(bumps).await;
        eprintln!("{:?}: 40 concurrent updates in {:?}", db.backend, t.elapsed());
        let doc = first.load().await.unwrap();
        assert_eq!(doc.items.iter().find(|r| r.item.id == "web01").unwrap().last_cycle_at, 40, "{:?}", db.backend);
        assert!(first.version().await.unwrap() >= v0 + 40);
        // An update whose closure fails writes nothing.
        let failed = first
            .update(|d| {
                d.items.clear();
                Err::<(), _>(orchestrator::estate::EstateError::UnknownItem("nope".into()))
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(first.load().await.unwrap().items.len(), doc.items.len());
    }
}

/// The URL a test database was opened with, to open a second pool (a second node) on it.
fn db_url(db: &Db) -> String {
    db.target.clone()
}

/// A replication round reads each unit's items again under its holds: only those records, in the estate's order,
/// with the same settings as the whole document (an unknown id is left out, not an error: it was just removed).
#[tokio::test]
async fn a_few_items_are_read_without_the_rest_of_the_estate() {
    for db in databases().await {
        let root = tempfile::tempdir().unwrap();
        let estate = Estate::new(root.path(), db.clone());
        estate.create_once(orchestrator::demo::seed).await.unwrap();
        let whole = estate.load().await.unwrap();
        assert!(whole.items.len() > 3 && !whole.plans.is_empty());
        let (first, third) = (whole.items[0].clone(), whole.items[2].clone());
        let ids = [third.item.id.clone(), "no-such-item".to_owned(), first.item.id.clone()];
        let some = estate.load_items(&ids).await.unwrap();
        assert_eq!(some.items, vec![first, third], "{:?}: the two known items, in the estate's order", db.backend);
        assert!(some.plans.is_empty());
        assert_eq!(
            (&some.inventory, &some.faults, &some.replication),
            (&whole.inventory, &whole.faults, &whole.replication)
        );
    }
}

/// Reads of the whole estate parse only the rows whose text changed since this process last parsed them: a row
/// changed by any other writer is read as it is now, and a damaged one is refused, not served from memory.
#[tokio::test]
async fn a_row_changed_behind_a_readers_back_is_read_as_it_is_now() {
    for db in databases().await {
        let root = tempfile::tempdir().unwrap();
        let estate = Estate::new(root.path(), db.clone());
        estate.create_once(orchestrator::demo::seed).await.unwrap();
        let before = estate.load().await.unwrap();
        assert_eq!(estate.load().await.unwrap(), before, "{:?}: an unchanged estate reads the same", db.backend);

        let mut rec = before.items.iter().find(|r| r.item.id == "web01").unwrap().clone();
        rec.item.name = "renamed by another writer".into();
        sqlx::query("update estate_items set record = $1 where id = 'web01'")
            .bind(serde_json::to_string(&rec).unwrap())
            .execute(&db.pool)
            .await
            .unwrap();
        let after = estate.load().await.unwrap();
        let web01 = after.items.iter().find(|r| r.item.id == "web01").unwrap();
        assert_eq!(web01.item.name, "renamed by another writer", "{:?}", db.backend);
        assert_eq!(after.items.len(), before.items.len());

        sqlx::query("update estate_items set record = '{\"item\": 7' where id = 'web01'")
            .execute(&db.pool)
            .await
            .unwrap();
        let damaged = estate.load().await;
        assert!(
            matches!(&damaged, Err(orchestrator::estate::EstateError::CorruptRow { what, .. }) if what == "item web01"),
            "{:?}: {damaged:?}",
            db.backend
        );
    }
}
