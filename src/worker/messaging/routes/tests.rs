//! Unit tests of `routes`.

use super::*;

#[test]
fn recipients() {
    assert_eq!(
        normalize_recipient("+49 151 1234-5678").as_deref(),
        Some("4915112345678")
    );
    assert_eq!(
        normalize_recipient("4915550002@c.us").as_deref(),
        Some("4915550002@c.us")
    );
    for id in ["123456789012345@lid", "4915550001-1700000000@g.us"] {
        assert_eq!(normalize_recipient(id).as_deref(), Some(id));
    }
    for bad in [
        "4915-550002@c.us",
        "1234-5678901@lid",
        "",
        "123",
        "abc12345",
        "49151@evil",
        "1234567890123456789012345678901234",
    ] {
        assert_eq!(normalize_recipient(bad), None, "{bad}");
    }
}
