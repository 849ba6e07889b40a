//! PURE: a streaming tar (POSIX ustar, plus the PAX and GNU long-name extensions) reader and
//! the headers of a tar writer, with the entry rules of profile imports.
//!
//! The reader is push-based: [`TarReader::feed`] takes the next chunk of the body as it arrives
//! and answers the [`Event`]s it completes (file data as zero-copy slices of the chunk), so an
//! upload is unpacked while it streams, never buffered. It accepts only what a Chromium profile
//! needs — regular files and directories under relative paths — and refuses everything else
//! with a [`TarError`]: absolute paths, `..`, symbolic and hard links, devices, FIFOs, sparse
//! files. A stream that ends before the end-of-archive blocks is [`TarError::Truncated`].
//!
//! The writer side is [`header`] (one entry's header blocks, a PAX record first when the path
//! does not fit ustar's fields), [`padding`] and [`END_OF_ARCHIVE`]. The I/O (reading files,
//! writing them) is in `profile.rs`.

use bytes::Bytes;

mod write;
pub use write::header;

/// The tar block size.
pub const BLOCK: usize = 512;
/// Two zero blocks end an archive.
pub const END_OF_ARCHIVE: [u8; 2 * BLOCK] = [0; 2 * BLOCK];
/// Largest PAX or GNU long-name record the reader keeps (they hold a path, not data).
pub const MAX_META_BYTES: u64 = 64 * 1024;
/// Longest entry path accepted, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Largest size ustar's 11 octal digits can say; larger files are refused (a profile has none).
pub const MAX_ENTRY_BYTES: u64 = 0o77777777777;

/// Why an archive (or one entry of it) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TarError {
    /// A header block's checksum is wrong (not a tar, or corrupted in transit).
    #[error("tar header {index}: bad checksum (not a tar stream, or corrupted)")]
    Checksum {
        /// The entry's position in the archive, from 0.
        index: u64,
    },
    /// A numeric field could not be read.
    #[error("tar header {index}: bad {field} field")]
    BadField {
        /// The entry's position.
        index: u64,
        /// Which field.
        field: &'static str,
    },
    /// An entry of a type profiles never contain (link, device, FIFO, sparse file, …).
    #[error("{path:?}: {kind} entries are not accepted (only regular files and directories)")]
    Unsupported {
        /// The entry's path as written in the archive.
        path: String,
        /// What it is.
        kind: &'static str,
    },
    /// An absolute path, a `..` component, or a path that is not valid UTF-8 or too long.
    #[error("{path:?}: unsafe path ({why})")]
    UnsafePath {
        /// The path as written in the archive.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A PAX or GNU long-name record larger than [`MAX_META_BYTES`], or malformed.
    #[error("tar header {index}: bad extended header ({why})")]
    BadExtension {
        /// The entry's position.
        index: u64,
        /// What is wrong.
        why: &'static str,
    },
    /// The stream ended before the end-of-archive blocks.
    #[error("the tar stream is truncated (it ended inside {inside})")]
    Truncated {
        /// Where it ended: "a header", "the data of <path>", "the archive (no end blocks)".
        inside: String,
    },
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file of this many bytes.
    File {
        /// Its size.
        size: u64,
    },
}

/// What the reader completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An entry starts: its safe relative path (components joined by `/`) and kind. A file's
    /// bytes follow as [`Event::Data`], then [`Event::FileEnd`] (also for an empty file).
    Entry {
        /// The relative path, already validated by [`safe_path`].
        path: String,
        /// Directory or file.
        kind: Kind,
    },
    /// The next bytes of the current file.
    Data(Bytes),
    /// The current file is complete.
    FileEnd,
    /// The end-of-archive marker was read; anything after it is ignored.
    End,
}

/// Validates an entry path and normalises it: relative, no `..`, no NUL, UTF-8, `.` and empty
/// components dropped (`./Default//x` → `Default/x`). An empty result (the archive's root
/// directory, `./`) is `Ok("")`.
pub fn safe_path(raw: &[u8]) -> Result<String, TarError> {
    let shown = String::from_utf8_lossy(raw).into_owned();
    let bad = |why| TarError::UnsafePath {
        path: shown.clone(),
        why,
    };
    let s = std::str::from_utf8(raw).map_err(|_| bad("not UTF-8"))?;
    if s.len() > MAX_PATH_BYTES {
        return Err(bad("too long"));
    }
    if s.starts_with('/') {
        return Err(bad("absolute"));
    }
    if s.contains('\0') {
        return Err(bad("NUL byte"));
    }
    let mut parts = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(bad("'..' component")),
            c if c.len() > 255 => return Err(bad("component longer than 255 bytes")),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// Zero bytes needed after `size` bytes of data to fill the block.
pub fn padding(size: u64) -> usize {
    let rem = (size % BLOCK as u64) as usize;
    if rem == 0 { 0 } else { BLOCK - rem }
}

// === the reader ===

/// Overrides a PAX or GNU record sets for the next entry.
#[derive(Debug, Default)]
struct Pending {
    path: Option<Vec<u8>>,
    size: Option<u64>,
}

#[derive(Debug)]
enum Meta {
    /// PAX extended header of the next entry.
    Pax,
    /// GNU long name of the next entry.
    LongName,
    /// Read and forgotten (global PAX header, GNU long link name).
    Ignore,
}

#[derive(Debug)]
enum State {
    /// Collecting a header block.
    Header,
    /// Inside a file's data.
    FileData {
        path: String,
        size: u64,
        remaining: u64,
    },
    /// Inside an extended header's data.
    MetaData {
        meta: Meta,
        buf: Vec<u8>,
        remaining: u64,
    },
    /// Skipping the zero bytes after some data.
    Padding { remaining: usize },
    /// After the end-of-archive block.
    Ended,
}

/// The streaming reader. Feed it chunks with [`TarReader::feed`], then call
/// [`TarReader::finish`] when the stream ends.
#[derive(Debug)]
pub struct TarReader {
    state: State,
    header: Vec<u8>,
    pending: Pending,
    index: u64,
}

impl Default for TarReader {
    fn default() -> Self {
        Self::new()
    }
}

fn octal(field: &[u8]) -> Option<u64> {
    // Base-256 (GNU): the high bit of the first byte set, big-endian after it.
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(v);
    }
    let s = std::str::from_utf8(field).ok()?;
    let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    &field[..end]
}

fn checksum_ok(h: &[u8]) -> bool {
    let Some(stored) = octal(&h[148..156]) else {
        return false;
    };
    let unsigned: u64 = h
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
    // Some old writers summed signed bytes; accept that form too.
    let signed: i64 = h
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                i64::from(b' ')
            } else {
                i64::from(*b as i8)
            }
        })
        .sum();
    stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed)
}

/// Parses PAX records (`"<len> <key>=<value>\n"`…) into `pending`.
fn parse_pax(buf: &[u8], pending: &mut Pending, index: u64) -> Result<(), TarError> {
    let bad = |why| TarError::BadExtension { index, why };
    let mut rest = buf;
    while !rest.is_empty() {
        let sp = rest
            .iter()
            .position(|b| *b == b' ')
            .ok_or_else(|| bad("record without length"))?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad record length"))?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad("bad record length"));
        }
        let record = &rest[sp + 1..len - 1];
        let eq = record
            .iter()
            .position(|b| *b == b'=')
            .ok_or_else(|| bad("record without '='"))?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        match key {
            b"path" => pending.path = Some(value.to_vec()),
            b"size" => {
                pending.size = Some(
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| bad("bad size record"))?,
                )
            }
            // mtime, uid, atime, linkpath (links are refused anyway), charset…: not needed.
            _ => {}
        }
        rest = &rest[len..];
    }
    Ok(())
}

impl TarReader {
    /// A reader at the start of an archive.
    pub fn new() -> Self {
        Self {
            state: State::Header,
            header: Vec::with_capacity(BLOCK),
            pending: Pending::default(),
            index: 0,
        }
    }

    /// Whether the end-of-archive marker was read.
    pub fn ended(&self) -> bool {
        matches!(self.state, State::Ended)
    }

    /// Consumes the next chunk; answers the events it completed, in order. After an error the
    /// reader must not be fed again.
    pub fn feed(&mut self, chunk: Bytes) -> Result<Vec<Event>, TarError> {
        let mut out = Vec::new();
        let mut chunk = chunk;
        while !chunk.is_empty() {
            match &mut self.state {
                State::Ended => break,
                State::Header => {
                    let need = BLOCK - self.header.len();
                    let take = need.min(chunk.len());
                    self.header.extend_from_slice(&chunk.split_to(take));
                    if self.header.len() == BLOCK {
                        let block = std::mem::replace(&mut self.header, Vec::with_capacity(BLOCK));
                        self.on_header(&block, &mut out)?;
                    }
                }
                State::FileData {
                    remaining, size, ..
                } => {
                    let take = (*remaining).min(chunk.len() as u64) as usize;
                    *remaining -= take as u64;
                    let (done, size) = (*remaining == 0, *size);
                    out.push(Event::Data(chunk.split_to(take)));
                    if done {
                        out.push(Event::FileEnd);
                        self.after_data(size);
                    }
                }
                State::MetaData { buf, remaining, .. } => {
                    let take = (*remaining).min(chunk.len() as u64) as usize;
                    *remaining -= take as u64;
                    buf.extend_from_slice(&chunk.split_to(take));
                    if *remaining == 0 {
                        let State::MetaData { meta, buf, .. } =
                            std::mem::replace(&mut self.state, State::Header)
                        else {
                            unreachable!("matched above")
                        };
                        self.on_meta(meta, &buf)?;
                        self.state = match padding(buf.len() as u64) {
                            0 => State::Header,
                            n => State::Padding { remaining: n },
                        };
                    }
                }
                State::Padding { remaining } => {
                    let take = (*remaining).min(chunk.len());
                    *remaining -= take;
                    let _ = chunk.split_to(take);
                    if *remaining == 0 {
                        self.state = State::Header;
                    }
                }
            }
        }
        Ok(out)
    }

    /// The stream ended: `Ok` only if the end-of-archive marker was read.
    pub fn finish(&self) -> Result<(), TarError> {
        let inside = match &self.state {
            State::Ended => return Ok(()),
            State::Header if self.header.is_empty() => "the archive (no end blocks)".to_owned(),
            State::Header => "a header".to_owned(),
            State::FileData { path, .. } => format!("the data of {path:?}"),
            State::MetaData { .. } => "an extended header".to_owned(),
            State::Padding { .. } => "the padding after an entry".to_owned(),
        };
        Err(TarError::Truncated { inside })
    }

    fn after_data(&mut self, size: u64) {
        self.state = match padding(size) {
            0 => State::Header,
            n => State::Padding { remaining: n },
        };
    }

    fn on_meta(&mut self, meta: Meta, buf: &[u8]) -> Result<(), TarError> {
        match meta {
            Meta::Pax => parse_pax(buf, &mut self.pending, self.index),
            Meta::LongName => {
                self.pending.path = Some(cstr(buf).to_vec());
                Ok(())
            }
            Meta::Ignore => Ok(()),
        }
    }

    fn on_header(&mut self, h: &[u8], out: &mut Vec<Event>) -> Result<(), TarError> {
        let index = self.index;
        if h.iter().all(|b| *b == 0) {
            // The first zero block ends the archive (the second one is mere padding).
            self.state = State::Ended;
            out.push(Event::End);
            return Ok(());
        }
        if !checksum_ok(h) {
            return Err(TarError::Checksum { index });
        }
        let typeflag = h[156];
        let header_size = octal(&h[124..136]).ok_or(TarError::BadField {
            index,
            field: "size",
        })?;
        // Extension headers describe the next entry.
        let meta = match typeflag {
            b'x' => Some(Meta::Pax),
            b'L' => Some(Meta::LongName),
            b'g' | b'K' => Some(Meta::Ignore),
            _ => None,
        };
        if let Some(meta) = meta {
            if header_size > MAX_META_BYTES {
                return Err(TarError::BadExtension {
                    index,
                    why: "larger than 64 KiB",
                });
            }
            self.state = if header_size == 0 {
                State::Header
            } else {
                State::MetaData {
                    meta,
                    buf: Vec::with_capacity(header_size as usize),
                    remaining: header_size,
                }
            };
            return Ok(());
        }
        self.index += 1;
        let pending = std::mem::take(&mut self.pending);
        let raw_path = match pending.path {
            Some(p) => p,
            None => {
                let name = cstr(&h[0..100]);
                // POSIX ustar ("ustar\0") has a prefix field; old GNU ("ustar ") uses those
                // bytes for other things.
                let prefix = if &h[257..263] == b"ustar\0" {
                    cstr(&h[345..500])
                } else {
                    &[]
                };
                if prefix.is_empty() {
                    name.to_vec()
                } else {
                    [prefix, b"/", name].concat()
                }
            }
        };
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let size = pending.size.unwrap_or(header_size);
        let unsupported = |kind| TarError::Unsupported {
            path: shown.clone(),
            kind,
        };
        let kind = match typeflag {
            b'0' | 0 | b'7' => Kind::File { size },
            b'5' => Kind::Dir,
            b'1' => return Err(unsupported("hard link")),
            b'2' => return Err(unsupported("symbolic link")),
            b'3' => return Err(unsupported("character device")),
            b'4' => return Err(unsupported("block device")),
            b'6' => return Err(unsupported("FIFO")),
            b'S' => return Err(unsupported("sparse file")),
            _ => return Err(unsupported("unknown")),
        };
        // Old archives mark directories only by a trailing slash on a regular entry.
        let kind = match kind {
            Kind::File { size: 0 } if raw_path.ends_with(b"/") => Kind::Dir,
            k => k,
        };
        if size > MAX_ENTRY_BYTES {
            return Err(TarError::BadField {
                index,
                field: "size",
            });
        }
        let path = safe_path(&raw_path)?;
        match kind {
            Kind::Dir => {
                // A directory's size is meaningless; skip any data it claims.
                if size > 0 {
                    self.state = State::Padding {
                        remaining: usize::try_from(size).unwrap_or(usize::MAX) + padding(size),
                    };
                }
                if !path.is_empty() {
                    out.push(Event::Entry { path, kind });
                }
            }
            Kind::File { size } => {
                if path.is_empty() {
                    return Err(TarError::UnsafePath {
                        path: shown,
                        why: "a file named like the root directory",
                    });
                }
                out.push(Event::Entry {
                    path: path.clone(),
                    kind,
                });
                if size == 0 {
                    out.push(Event::FileEnd);
                } else {
                    self.state = State::FileData {
                        path,
                        size,
                        remaining: size,
                    };
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
