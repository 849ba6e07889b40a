//! Unit tests of `driver`.

use super::*;

#[test]
fn recipients_are_checked() {
    assert!(check_recipient("4915550001").is_ok());
    assert!(check_recipient("4915550001@c.us").is_ok());
    assert!(check_recipient("").is_err());
    assert!(check_recipient("abc@c.us").is_err());
}

#[test]
fn strings_are_escaped_for_js() {
    assert_eq!(js_string("a\"b\\c\n"), r#""a\"b\\c\n""#);
    assert_eq!(js_string("');alert(1)//"), r#""');alert(1)//""#);
}

#[test]
fn user_agents_never_say_headless() {
    let ua =
        user_agent_for("Chromium 131.0.6778.85 built on Debian GNU/Linux 12 (bookworm)\n").unwrap();
    assert!(
        ua.contains("Chrome/131.0.0.0 ") && !ua.contains("Headless"),
        "{ua}"
    );
    assert!(user_agent_for("Google Chrome 120.0.6099.71").is_some());
    assert_eq!(user_agent_for("no version here"), None);
}

#[test]
fn local_urls_are_recognised() {
    for local in [
        "http://127.0.0.1:7070/",
        "http://localhost:1/",
        "http://10.213.7.1:7070/",
        "http://[::1]:80/",
    ] {
        assert!(is_local_url(local), "{local}");
    }
    for public in ["https://web.whatsapp.com/", "http://8.8.8.8/", "not a url"] {
        assert!(!is_local_url(public), "{public}");
    }
}

#[test]
fn adapter_uses_the_binding_name() {
    assert!(ADAPTER_JS.contains(&format!("const BINDING = '{BINDING}'")));
}
