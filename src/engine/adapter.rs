//! The page adapter: the script that knows WhatsApp Web's internals, as one string.
//!
//! It is written in parts (`assets/wa/adapter/*.js`), one per area, so that each area can grow on
//! its own. The parts are not scripts by themselves: `core.js` opens one closure and `end.js`
//! closes it, and a part may use anything an earlier part declared. [`ADAPTER_JS`] joins them in
//! the order [`PARTS`] gives, at compile time.

/// The parts in the order they are joined (names only, for tests and diagnostics).
pub const PARTS: &[&str] = &[
    "core", "messages", "send", "contacts", "chats", "actions", "events", "groups", "media", "end",
];

/// The adapter script, injected into every new document of a session's page.
pub const ADAPTER_JS: &str = concat!(
    include_str!("../../assets/wa/adapter/core.js"),
    "\n",
    include_str!("../../assets/wa/adapter/messages.js"),
    "\n",
    include_str!("../../assets/wa/adapter/send.js"),
    "\n",
    include_str!("../../assets/wa/adapter/contacts.js"),
    "\n",
    include_str!("../../assets/wa/adapter/chats.js"),
    "\n",
    include_str!("../../assets/wa/adapter/actions.js"),
    "\n",
    include_str!("../../assets/wa/adapter/events.js"),
    "\n",
    include_str!("../../assets/wa/adapter/groups.js"),
    "\n",
    include_str!("../../assets/wa/adapter/media.js"),
    "\n",
    include_str!("../../assets/wa/adapter/end.js"),
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_is_joined_once_in_order() {
        let mut at = 0;
        for part in PARTS.iter().copied() {
            let marker = if part == "core" {
                "wafleet page adapter, part 1".to_string()
            } else if part == "end" {
                "wafleet page adapter, last part".to_string()
            } else {
                format!("wafleet page adapter, part: {part}")
            };
            let found = ADAPTER_JS[at..]
                .find(&marker)
                .unwrap_or_else(|| panic!("part {part} missing or out of order"));
            at += found + marker.len();
        }
        assert!(ADAPTER_JS.trim_end().ends_with("})();"));
    }
}
