//! `custody ledger verify` against a ledger edited directly with SQL: each
//! case names the row.

use crate::support::*;

fn ledger() -> Ws {
    let ws = Ws::new();
    pacs_tree(&ws, 1, 3, 1_000);
    ws.transfer(&[]).assert().code(0);
    ws.custody(&["ledger", "verify"]).assert().code(0);
    ws
}

/// A fresh sealed and verified ledger, tampered with `sql`; what
/// `ledger verify` reports (it must exit 1).
fn problems_after(sql: &str) -> String {
    let ws = ledger();
    ws.db().execute_batch(sql).unwrap();
    problems(&ws)
}

fn problems(ws: &Ws) -> String {
    let out = ws
        .custody(&["ledger", "verify"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    stdout(&out)
}

#[test]
fn an_edited_event_is_named() {
    let p = problems_after(
        "UPDATE events SET payload = replace(payload, '\"files\":12', '\"files\":11') WHERE seq = 2",
    );
    assert!(
        p.contains("event 2 (files_landed): contents do not match its hash (row edited)"),
        "{p}"
    );
}

#[test]
fn an_edited_or_deleted_stored_manifest_is_named() {
    let p = problems_after(
        "UPDATE manifests SET bytes = CAST(replace(CAST(bytes AS TEXT), 'custody-manifest', 'custody-manifesT') AS BLOB)",
    );
    assert!(
        p.contains("stored bytes do not match the hash sealed in event 3"),
        "{p}"
    );
    let p = problems_after("DELETE FROM manifests");
    assert!(p.contains("event 3 (sealed): manifest "), "{p}");
    assert!(p.contains(" is missing from the ledger"), "{p}");
}

#[test]
fn a_deleted_event_is_named() {
    let p = problems_after("DELETE FROM events WHERE seq = 2");
    assert!(
        p.contains("event 3: sequence jumps from 1 (events 2..2 deleted)"),
        "{p}"
    );
    assert!(p.contains("landed row 1 ("), "{p}");
}

#[test]
fn an_inserted_event_is_named() {
    let ws = ledger();
    let db = ws.db();
    // Make room after event 1 and insert a forged event there.
    db.execute_batch(
        "UPDATE events SET seq = seq + 100 WHERE seq > 1;
         UPDATE events SET seq = seq - 99 WHERE seq > 100;
         UPDATE landed SET event_seq = event_seq + 1;
         INSERT INTO events (seq, at, kind, run_id, payload, prev_hash, hash)
         SELECT 2, at, 'run_resumed', run_id, payload, hash, hash FROM events WHERE seq = 1;",
    )
    .unwrap();
    let p = problems(&ws);
    // The forged row does not hash to what it claims, and every row after
    // it moved, which changes its hash (the sequence number is hashed).
    assert!(
        p.contains("event 2 (run_resumed): contents do not match its hash"),
        "{p}"
    );
    assert!(
        p.contains("event 3 (files_landed): contents do not match its hash"),
        "{p}"
    );

    // Appending a forged event at the end, linked to the real head.
    let ws = ledger();
    ws.db()
        .execute_batch(
            "INSERT INTO events (seq, at, kind, run_id, payload, prev_hash, hash)
             SELECT seq + 1, at, 'verified', run_id, '{\"result\":\"pass\"}', hash, hash
             FROM events ORDER BY seq DESC LIMIT 1;",
        )
        .unwrap();
    let p = problems(&ws);
    assert!(
        p.contains("event 5 (verified): contents do not match its hash"),
        "{p}"
    );
    assert!(p.contains("event 5 (verified): signature missing"), "{p}");
}

#[test]
fn reordered_events_are_named() {
    let ws = ledger();
    ws.db()
        .execute_batch(
            "UPDATE events SET seq = 100 WHERE seq = 3;
             UPDATE events SET seq = 3 WHERE seq = 4;
             UPDATE events SET seq = 4 WHERE seq = 100;",
        )
        .unwrap();
    let p = problems(&ws);
    assert!(
        p.contains("event 3 (verified): prev_hash does not match"),
        "{p}"
    );
}

#[test]
fn an_edited_landed_row_is_named() {
    let ws = ledger();
    let path: String = ws
        .db()
        .query_row("SELECT path FROM landed WHERE id = 5", [], |r| r.get(0))
        .unwrap();
    ws.db()
        .execute("UPDATE landed SET size = size + 1 WHERE id = 5", [])
        .unwrap();
    let p = problems(&ws);
    assert!(
        p.contains(&format!(
            "landed row 5 ({path}): contents do not match its hash"
        )),
        "{p}"
    );
}

#[test]
fn a_deleted_landed_row_is_named() {
    let p = problems_after("DELETE FROM landed WHERE id = 3");
    assert!(p.contains("event 2 (files_landed): its landed rows do not match its digest (12 rows recorded, 11 found"), "{p}");
}

#[test]
fn a_stripped_signature_is_named() {
    let p =
        problems_after("UPDATE events SET signature = NULL, signer = NULL WHERE kind = 'sealed'");
    assert!(p.contains("event 3 (sealed): signature missing"), "{p}");
}

#[test]
fn a_rewritten_chain_is_caught_by_the_signatures() {
    // An attacker without the operator key edits a landed hash and then
    // recomputes every row hash, digest and event hash. Only the signatures
    // on sealed/verified events can catch this.
    let ws = ledger();
    let db = ws.db();
    let tampered: Vec<(i64, String)> = {
        let mut s = db
            .prepare("SELECT seq, payload FROM events ORDER BY seq")
            .unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    db.execute(
        "UPDATE events SET at = '2000-01-01T00:00:00Z' WHERE seq = 3",
        [],
    )
    .unwrap();
    // Recompute the chain from event 3 on with the published hash rule.
    let mut prev: String = db
        .query_row("SELECT hash FROM events WHERE seq = 2", [], |r| r.get(0))
        .unwrap();
    for (seq, payload) in tampered.into_iter().skip(2) {
        let (at, kind, run, manifest): (String, String, Option<u64>, Option<String>) = db
            .query_row(
                "SELECT at, kind, run_id, manifest_id FROM events WHERE seq = ?1",
                [seq],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        let h = custody::ledger::event_hash(
            seq as u64,
            &at,
            &kind,
            run,
            manifest.as_deref(),
            &payload,
            &prev,
        );
        db.execute(
            "UPDATE events SET hash = ?1, prev_hash = ?2 WHERE seq = ?3",
            rusqlite::params![h, prev, seq],
        )
        .unwrap();
        prev = h;
    }
    let p = problems(&ws);
    assert!(
        p.contains("event 3 (sealed): signature does not verify"),
        "{p}"
    );
    assert!(!p.contains("row edited"), "the rewrite was consistent: {p}");
}

#[test]
fn a_ledger_from_a_newer_custody_is_refused() {
    let ws = ledger();
    ws.db().pragma_update(None, "user_version", 99).unwrap();
    let out = ws
        .custody(&["ledger", "verify"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(
        stderr(&out).contains("schema version 99 is newer"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_signed_event_verifies_with_stock_ssh_keygen() {
    let ws = ledger();
    let (hash, sig): (String, String) = ws
        .db()
        .query_row(
            "SELECT hash, signature FROM events WHERE kind = 'sealed'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let sig_path = ws.root().join("event.sig");
    std::fs::write(&sig_path, sig).unwrap();
    let check = |msg: &str| {
        let mut child = std::process::Command::new("ssh-keygen")
            .args(["-Y", "verify", "-f"])
            .arg(ws.signers())
            .args(["-I", IDENTITY, "-n", "custody-ledger", "-s"])
            .arg(&sig_path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(msg.as_bytes())
            .unwrap();
        child.wait().unwrap().success()
    };
    assert!(check(&hash));
    assert!(!check(&hash.replacen(&hash[..1], "x", 1)));
}

/// Copies the fixture ledger written by an older custody (schema `from`,
/// `events` events), checks that it is migrated to the current schema with
/// an untouched backup, that its chain and stored manifests still verify,
/// and that new runs chain onto it.
fn migrates(fixture: &str, from: i64, events: i64) {
    let ws = Ws::new();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(fixture);
    std::fs::copy(&fixture, &ws.ledger).unwrap();
    let out = ws
        .custody(&["ledger", "verify"])
        .assert()
        .code(0)
        .get_output()
        .clone();
    let text = stdout(&out);
    assert!(text.contains("ledger intact"), "{text}");
    assert!(text.contains(&format!(": {events} events")), "{text}");
    let version: i64 = ws
        .db()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 7);
    let backup = ws.root().join(format!("custody.db.v{from}.bak"));
    let old = rusqlite::Connection::open(&backup).unwrap();
    let (v, n): (i64, i64) = (
        old.pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap(),
        old.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .unwrap(),
    );
    assert_eq!((v, n), (from, events));
    // New runs chain onto the migrated history.
    ws.file("new", b"after the upgrade");
    ws.transfer(&[]).assert().code(0);
    let out = ws
        .custody(&["ledger", "verify"])
        .assert()
        .code(0)
        .get_output()
        .clone();
    assert!(
        stdout(&out).contains(&format!(": {} events", events + 4)),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_version_1_ledger_is_migrated_with_a_backup_and_still_verifies() {
    migrates("ledger-v1.db", 1, 4);
}

#[test]
fn a_version_2_ledger_is_migrated_with_a_backup_and_still_verifies() {
    migrates("ledger-v2.db", 2, 8);
}

#[test]
fn a_version_4_ledger_is_migrated_with_a_backup_and_still_verifies() {
    migrates("ledger-v4.db", 4, 4);
}

#[test]
fn a_version_5_ledger_is_migrated_with_a_backup_and_still_verifies() {
    migrates("ledger-v5.db", 5, 8);
}

#[test]
fn a_version_6_ledger_is_migrated_with_a_backup_and_still_verifies() {
    migrates("ledger-v6.db", 6, 8);
}

#[test]
fn a_version_3_ledger_is_migrated_with_a_backup_and_still_verifies() {
    migrates("ledger-v3.db", 3, 8);
}
