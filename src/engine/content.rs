//! PURE: the structured part of an inbound message (a location, a contact card, a poll), from
//! what the page adapter reported, checked and bounded.
//!
//! The adapter reads WhatsApp Web's message model (`lat`/`lng`/`loc`, `vcardFormattedName` and
//! the vCard in `body`, `vcardList`, `pollName`/`pollOptions`/`pollSelectableOptionsCount`;
//! docs/wa-surface.md C1) and reports `content`. The page is not trusted
//! to be well-formed: anything out of shape is dropped, strings are clipped, lists capped, so a
//! webhook payload never carries more than a few KiB of it.

use serde_json::{Value, json};

/// Longest name, address, question or option kept, in characters.
const MAX_TEXT_CHARS: usize = 1024;
/// Longest vCard kept, in bytes.
const MAX_VCARD_BYTES: usize = 16 * 1024;
/// Most cards of a multi-contact message and most phones read from one.
const MAX_CARDS: usize = 10;
/// Most poll options kept.
const MAX_OPTIONS: usize = 32;

fn clip(v: &Value) -> Option<String> {
    let s = v.as_str()?;
    Some(s.chars().take(MAX_TEXT_CHARS).collect())
}

fn degrees(v: &Value, max: f64) -> Option<f64> {
    v.as_f64().filter(|d| d.is_finite() && d.abs() <= max)
}

/// The phone numbers of a vCard's `TEL` lines (digits only; the `waid` parameter when given).
pub fn vcard_phones(card: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in card.lines() {
        let upper = line.to_ascii_uppercase();
        if !(upper.starts_with("TEL") || upper.contains(".TEL")) {
            continue;
        }
        let Some((params, value)) = line.split_once(':') else {
            continue;
        };
        let waid = params
            .split(';')
            .find_map(|p| p.strip_prefix("waid=").or_else(|| p.strip_prefix("WAID=")));
        let digits: String = waid
            .unwrap_or(value)
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        if (5..=20).contains(&digits.len()) && !out.contains(&digits) {
            out.push(digits);
        }
        if out.len() >= MAX_CARDS {
            break;
        }
    }
    out
}

/// The API's `location`, `contact` or `poll` object for a message of WhatsApp type `kind`, from
/// the adapter's `content` report; `None` when there is none or it is out of shape.
pub fn parse(kind: &str, content: Option<&Value>) -> Option<Value> {
    let c = content?;
    match kind {
        "location" => {
            let l = c.get("location")?;
            let latitude = degrees(l.get("latitude")?, 90.0)?;
            let longitude = degrees(l.get("longitude")?, 180.0)?;
            // WhatsApp shows a place's name and address as the two lines of its description.
            let description = l.get("description").and_then(clip);
            let (name, address) = match description.as_deref().map(|d| d.split_once('\n')) {
                Some(Some((n, a))) => (Some(n.to_owned()), Some(a.to_owned())),
                Some(None) => (description.clone(), None),
                None => (None, None),
            };
            Some(json!({"location": {
                "latitude": latitude, "longitude": longitude, "name": name, "address": address,
            }}))
        }
        "vcard" | "multi_vcard" => {
            let k = c.get("contact")?;
            let vcards: Vec<String> = k
                .get("vcards")?
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .filter(|v| v.len() <= MAX_VCARD_BYTES)
                .take(MAX_CARDS)
                .map(str::to_owned)
                .collect();
            if vcards.is_empty() {
                return None;
            }
            let mut phones = Vec::new();
            for card in &vcards {
                for p in vcard_phones(card) {
                    if !phones.contains(&p) && phones.len() < MAX_CARDS {
                        phones.push(p);
                    }
                }
            }
            let name = k.get("name").and_then(clip);
            Some(json!({"contact": {"name": name, "phones": phones, "vcards": vcards}}))
        }
        "poll_creation" => {
            let p = c.get("poll")?;
            let name = p.get("name").and_then(clip)?;
            let options: Vec<String> = p
                .get("options")?
                .as_array()?
                .iter()
                .filter_map(clip)
                .take(MAX_OPTIONS)
                .collect();
            let multiple = p.get("multiple").and_then(Value::as_bool).unwrap_or(false);
            Some(json!({"poll": {"name": name, "options": options, "multiple": multiple}}))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_splits_its_description_and_checks_its_degrees() {
        let c = json!({"location": {"latitude": 52.5, "longitude": 13.4, "description": "Office\nMain St 1"}});
        assert_eq!(
            parse("location", Some(&c)).unwrap()["location"],
            json!({"latitude": 52.5, "longitude": 13.4, "name": "Office", "address": "Main St 1"})
        );
        let bad = json!({"location": {"latitude": 95.0, "longitude": 13.4}});
        assert_eq!(parse("location", Some(&bad)), None);
        assert_eq!(parse("location", None), None);
        assert_eq!(parse("chat", Some(&c)), None);
    }

    #[test]
    fn a_contact_card_lists_its_phones() {
        let card = "BEGIN:VCARD\nVERSION:3.0\nFN:Ana\nTEL;type=CELL;waid=4915550009:+49 155 50009\nitem1.TEL:+1 (555) 010-0000\nEND:VCARD";
        assert_eq!(vcard_phones(card), vec!["4915550009", "15550100000"]);
        let c = json!({"contact": {"name": "Ana", "vcards": [card]}});
        let v = parse("vcard", Some(&c)).unwrap();
        assert_eq!(v["contact"]["phones"], json!(["4915550009", "15550100000"]));
        assert_eq!(v["contact"]["vcards"][0], json!(card));
        assert_eq!(
            parse("vcard", Some(&json!({"contact": {"vcards": []}}))),
            None
        );
    }

    #[test]
    fn a_poll_keeps_bounded_options() {
        let many: Vec<String> = (0..40).map(|i| format!("o{i}")).collect();
        let c = json!({"poll": {"name": "Lunch?", "options": many, "multiple": true}});
        let v = parse("poll_creation", Some(&c)).unwrap();
        assert_eq!(v["poll"]["options"].as_array().unwrap().len(), MAX_OPTIONS);
        assert_eq!(v["poll"]["multiple"], json!(true));
        assert_eq!(
            parse("poll_creation", Some(&json!({"poll": {"options": []}}))),
            None
        );
    }
}
