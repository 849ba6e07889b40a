//! PURE: the writer side of the tar format: one entry's header blocks ([`header`]), ustar
//! fields where the path fits them and a PAX record first where it does not.

use super::{BLOCK, Kind, MAX_ENTRY_BYTES, TarError, padding, safe_path};

fn put_octal(field: &mut [u8], value: u64) {
    // `width-1` octal digits, zero-padded, then NUL.
    let width = field.len() - 1;
    let s = format!("{value:0width$o}");
    field[..width].copy_from_slice(&s.as_bytes()[s.len() - width..]);
    field[width] = 0;
}

pub(super) fn ustar_block(
    name: &[u8],
    prefix: &[u8],
    typeflag: u8,
    size: u64,
    mode: u32,
    mtime: u64,
) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name);
    put_octal(&mut h[100..108], u64::from(mode & 0o7777));
    put_octal(&mut h[108..116], 0);
    put_octal(&mut h[116..124], 0);
    put_octal(&mut h[124..136], size);
    put_octal(&mut h[136..148], mtime.min(0o77777777777));
    h[156] = typeflag;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[345..345 + prefix.len()].copy_from_slice(prefix);
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                u64::from(b' ')
            } else {
                u64::from(*b)
            }
        })
        .sum();
    let s = format!("{sum:06o}");
    h[148..154].copy_from_slice(s.as_bytes());
    h[154] = 0;
    h[155] = b' ';
    h
}

/// Splits `path` into ustar's (prefix ≤ 155, name ≤ 100) at a `/`, if it can be.
fn split_ustar(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((&[], path));
    }
    (0..path.len())
        .rev()
        .filter(|i| path[*i] == b'/')
        .map(|i| (&path[..i], &path[i + 1..]))
        .find(|(p, n)| p.len() <= 155 && !n.is_empty() && n.len() <= 100)
}

/// The header block(s) of one entry: `path` relative (checked with [`safe_path`]; directories
/// get a trailing `/`), with a PAX `path` record first when ustar's fields cannot hold it. The
/// caller writes the file's bytes after it, then [`padding`] zero bytes.
pub fn header(path: &str, kind: Kind, mode: u32, mtime: u64) -> Result<Vec<u8>, TarError> {
    let clean = safe_path(path.as_bytes())?;
    if clean.is_empty() {
        return Err(TarError::UnsafePath {
            path: path.to_owned(),
            why: "empty",
        });
    }
    let (full, typeflag, size) = match kind {
        Kind::Dir => (format!("{clean}/"), b'5', 0),
        Kind::File { size } => (clean, b'0', size),
    };
    if size > MAX_ENTRY_BYTES {
        return Err(TarError::BadField {
            index: 0,
            field: "size",
        });
    }
    let bytes = full.as_bytes();
    let mut out = Vec::with_capacity(3 * BLOCK);
    let (prefix, name) = match split_ustar(bytes) {
        Some(split) => split,
        None => {
            // "<len> path=<path>\n", where <len> counts its own digits.
            let body_len = " path=".len() + bytes.len() + 1;
            let mut len = body_len + 1;
            while len.to_string().len() + body_len != len {
                len = len.to_string().len() + body_len;
            }
            let record = [format!("{len} path=").as_bytes(), bytes, b"\n"].concat();
            out.extend_from_slice(&ustar_block(
                b"././@PaxHeader",
                &[],
                b'x',
                record.len() as u64,
                0o644,
                mtime,
            ));
            out.extend_from_slice(&record);
            out.resize(out.len() + padding(record.len() as u64), 0);
            // The ustar name is only a fallback for readers without PAX: its last 100 bytes.
            (&[][..], &bytes[bytes.len().saturating_sub(100)..])
        }
    };
    out.extend_from_slice(&ustar_block(name, prefix, typeflag, size, mode, mtime));
    Ok(out)
}
