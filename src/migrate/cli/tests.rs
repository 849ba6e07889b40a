//! Unit tests of `cli`.

use super::*;

#[test]
fn sizes_read_like_people_write_them() {
    assert_eq!(human(10), "10 B");
    assert_eq!(human(1536), "1.5 KiB");
    assert_eq!(human(3 * 1024 * 1024), "3.0 MiB");
}

#[test]
fn row_lines_say_what_happened() {
    let r = RowReport {
        line: 2,
        client_id: "acme".into(),
        workspace: WorkspaceId::new("w").unwrap(),
        session: SessionId::new("s").unwrap(),
        result: Outcome::Skipped,
        files: Some(3),
        bytes: Some(2048),
        shard: Some(1),
        status: None,
        message: Some("already imported".into()),
        dry_run: false,
    };
    assert_eq!(
        r.text(),
        "line 2 acme -> w/s: skipped (3 files, 2.0 KiB, shard 1): already imported"
    );
    let dry = RowReport {
        result: Outcome::Imported,
        dry_run: true,
        message: None,
        ..r
    };
    assert!(dry.text().contains("would import"), "{}", dry.text());
}
