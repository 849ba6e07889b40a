//! Unit tests of the HTTP layer's parsing helpers.

use super::*;

#[test]
fn percent_decoding() {
    assert_eq!(percent_decode("a%2Fb"), "a/b");
    assert_eq!(percent_decode("a%zzb%"), "a%zzb%");
    assert_eq!(percent_decode("%C3%A7"), "ç");
}

#[test]
fn go_bools() {
    assert_eq!(parse_go_bool(""), Some(true));
    assert_eq!(parse_go_bool("false"), Some(false));
    assert_eq!(parse_go_bool("yes"), None);
}
