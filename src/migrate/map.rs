//! PURE: the import map file, CSV `clientId,workspace,session`, one row per whatsapp-web.js
//! LocalAuth session.
//!
//! * `clientId` is what the whatsapp-web.js app passed to `new LocalAuth({clientId})`; its
//!   profile is `<dataPath>/session-<clientId>/`. LocalAuth accepts `^[-_\w]+$` (ASCII letters,
//!   digits, `_`, `-`), so that is what is accepted here; it reaches a path only after this check.
//! * `workspace` and `session` are wafleet ids (`^[A-Za-z0-9_-]{1,64}$`).
//! * A first line `clientId,workspace,session` (any case, spaces around fields allowed) is a
//!   header and skipped; blank lines and lines starting with `#` are ignored.
//!
//! Every bad line is reported with its line number, all at once, so the operator fixes the file
//! in one go; a client id or a target session named twice is an error too (two profiles cannot
//! become one session, and one profile must not be imported twice).

use std::collections::HashMap;

use crate::ids::{SessionId, WorkspaceId};

/// Longest client id accepted (it becomes a directory name, `session-<clientId>`).
pub const MAX_CLIENT_ID_LEN: usize = 200;

/// One valid row of the map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapRow {
    /// 1-based line number in the file.
    pub line: usize,
    /// The whatsapp-web.js LocalAuth client id.
    pub client_id: String,
    /// The target workspace.
    pub workspace: WorkspaceId,
    /// The target session.
    pub session: SessionId,
}

/// What is wrong with one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct MapLineError {
    /// 1-based line number.
    pub line: usize,
    /// What to fix.
    pub message: String,
}

/// Checks a LocalAuth client id (`^[-_\w]+$`, at most [`MAX_CLIENT_ID_LEN`] bytes).
pub fn validate_client_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("clientId is empty".into());
    }
    if id.len() > MAX_CLIENT_ID_LEN {
        return Err(format!(
            "clientId is longer than {MAX_CLIENT_ID_LEN} characters"
        ));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "clientId {id:?} may contain only letters, digits, '_' and '-' (LocalAuth's rule)"
        ));
    }
    Ok(())
}

fn is_header(fields: &[&str]) -> bool {
    fields.len() == 3
        && fields[0].eq_ignore_ascii_case("clientid")
        && fields[1].eq_ignore_ascii_case("workspace")
        && fields[2].eq_ignore_ascii_case("session")
}

/// Parses the whole map. `Ok` holds the rows in file order; `Err` every line that is wrong.
pub fn parse_map(text: &str) -> Result<Vec<MapRow>, Vec<MapLineError>> {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut clients: HashMap<String, usize> = HashMap::new();
    let mut targets: HashMap<(WorkspaceId, SessionId), usize> = HashMap::new();
    let mut seen_content = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim().trim_start_matches('\u{feff}');
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = trimmed.split(',').map(str::trim).collect();
        let first = !seen_content;
        seen_content = true;
        if first && is_header(&fields) {
            continue;
        }
        let mut err = |message: String| errors.push(MapLineError { line, message });
        if fields.len() != 3 {
            err(format!(
                "expected 3 fields clientId,workspace,session, found {}",
                fields.len()
            ));
            continue;
        }
        let (client, ws, s) = (fields[0], fields[1], fields[2]);
        let mut ok = true;
        if let Err(m) = validate_client_id(client) {
            err(m);
            ok = false;
        }
        let workspace = WorkspaceId::new(ws).map_err(|e| format!("workspace {ws:?}: {e}"));
        let session = SessionId::new(s).map_err(|e| format!("session {s:?}: {e}"));
        let (workspace, session) = match (workspace, session) {
            (Ok(w), Ok(s)) if ok => (w, s),
            (w, s) => {
                for m in [w.err(), s.err()].into_iter().flatten() {
                    err(m);
                }
                continue;
            }
        };
        if let Some(prev) = clients.get(client) {
            err(format!("clientId {client:?} already mapped on line {prev}"));
            continue;
        }
        if let Some(prev) = targets.get(&(workspace.clone(), session.clone())) {
            err(format!(
                "session {workspace}/{session} is already the target of line {prev}"
            ));
            continue;
        }
        clients.insert(client.to_owned(), line);
        targets.insert((workspace.clone(), session.clone()), line);
        rows.push(MapRow {
            line,
            client_id: client.to_owned(),
            workspace,
            session,
        });
    }
    if errors.is_empty() {
        Ok(rows)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rows_with_or_without_a_header() {
        let with =
            "clientId,workspace,session\nacme,acme-ws,main\n\n# comment\n bob_2 , bob , s-1 \n";
        let rows = parse_map(with).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].line, 2);
        assert_eq!(rows[0].client_id, "acme");
        assert_eq!(rows[1].workspace.as_str(), "bob");
        assert_eq!(rows[1].session.as_str(), "s-1");
        assert_eq!(rows[1].line, 5);
        let without = parse_map("acme,acme-ws,main").unwrap();
        assert_eq!(without.len(), 1);
        // A header-looking line later in the file is an ordinary (invalid) row.
        assert!(parse_map("acme,a,b\nclientId,workspace,session").is_ok_and(|r| r.len() == 2));
        assert!(parse_map("").unwrap().is_empty());
        // CRLF files and a byte-order mark are fine.
        assert_eq!(
            parse_map("\u{feff}clientId,workspace,session\r\nx,y,z\r\n")
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn reports_every_bad_line_with_its_number() {
        let text = "acme,ws,main\n../x,ws,a\nok,bad ws,a\nok2,ws\nok3,ws,s/../x\nacme,ws2,b\nnew,ws,main\n";
        let errs = parse_map(text).unwrap_err();
        let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6, 7], "{errs:?}");
        assert!(errs[0].message.contains("clientId"), "{}", errs[0]);
        assert!(errs[1].message.contains("workspace"), "{}", errs[1]);
        assert!(errs[2].message.contains("3 fields"), "{}", errs[2]);
        assert!(errs[3].message.contains("session"), "{}", errs[3]);
        assert!(errs[4].message.contains("line 1"), "{}", errs[4]);
        assert!(errs[5].message.contains("target of line 1"), "{}", errs[5]);
        assert_eq!(errs[0].to_string(), format!("line 2: {}", errs[0].message));
    }

    #[test]
    fn client_ids_follow_local_auth() {
        for ok in ["acme", "a-b_c", "A1", "-_-"] {
            assert!(validate_client_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a/b", "..", "ä", "a.b", &"x".repeat(201)] {
            assert!(validate_client_id(bad).is_err(), "{bad}");
        }
    }
}
