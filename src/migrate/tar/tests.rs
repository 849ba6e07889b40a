//! The tar reader and writer: round trips through the writer, archives made by GNU tar
//! (ustar, PAX and GNU long names), and every entry the reader must refuse.

use super::write::ustar_block;
use super::*;

/// Feeds `bytes` in chunks of `chunk` bytes; answers the events or the first error.
fn read_all(bytes: &[u8], chunk: usize) -> Result<Vec<Event>, TarError> {
    let mut r = TarReader::new();
    let mut out = Vec::new();
    for c in bytes.chunks(chunk.max(1)) {
        out.extend(r.feed(Bytes::copy_from_slice(c))?);
    }
    r.finish()?;
    Ok(out)
}

/// (path, Some(content) for files / None for dirs), data events merged.
fn entries(events: &[Event]) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    for e in events {
        match e {
            Event::Entry {
                path,
                kind: Kind::Dir,
            } => out.push((path.clone(), None)),
            Event::Entry {
                path,
                kind: Kind::File { .. },
            } => out.push((path.clone(), Some(Vec::new()))),
            Event::Data(b) => out
                .last_mut()
                .and_then(|(_, c)| c.as_mut())
                .expect("data after a file entry")
                .extend_from_slice(b),
            Event::FileEnd | Event::End => {}
        }
    }
    out
}

fn archive(items: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, content) in items {
        match content {
            None => out.extend(header(path, Kind::Dir, 0o700, 1).unwrap()),
            Some(c) => {
                out.extend(
                    header(
                        path,
                        Kind::File {
                            size: c.len() as u64,
                        },
                        0o600,
                        1,
                    )
                    .unwrap(),
                );
                out.extend_from_slice(c);
                out.resize(out.len() + padding(c.len() as u64), 0);
            }
        }
    }
    out.extend_from_slice(&END_OF_ARCHIVE);
    out
}

#[test]
fn round_trips_in_any_chunking() {
    let long = format!("Default/IndexedDB/{}/000003.log", "x".repeat(150));
    let longest = format!("{}/f", "d".repeat(250));
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let items: Vec<(&str, Option<&[u8]>)> = vec![
        ("Default", None),
        ("Default/Local Storage", None),
        ("Local State", Some(b"{}")),
        ("Default/empty", Some(b"")),
        ("Default/block", Some(&[7u8; 512])),
        ("Default/big", Some(&big)),
        (long.as_str(), Some(b"long")),
        (longest.as_str(), Some(b"pax")),
    ];
    let bytes = archive(&items);
    for chunk in [1, 7, 511, 512, 513, 4096, bytes.len()] {
        let got = entries(&read_all(&bytes, chunk).unwrap());
        let want: Vec<(String, Option<Vec<u8>>)> = items
            .iter()
            .map(|(p, c)| ((*p).to_owned(), c.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(got, want, "chunk {chunk}");
    }
}

#[test]
fn reads_what_gnu_tar_writes() {
    let Ok(version) = std::process::Command::new("tar").arg("--version").output() else {
        eprintln!("no tar binary; skipped");
        return;
    };
    assert!(version.status.success());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("session-acme");
    let deep = root.join("Default/IndexedDB").join("y".repeat(120));
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(root.join("Local State"), b"{\"a\":1}").unwrap();
    std::fs::write(deep.join("CURRENT"), b"MANIFEST-000001\n").unwrap();
    for format in ["gnu", "posix", "ustar"] {
        let out = dir.path().join(format!("{format}.tar"));
        let ok = std::process::Command::new("tar")
            .arg(format!("--format={format}"))
            .arg("-cf")
            .arg(&out)
            .arg("-C")
            .arg(&root)
            .arg(".")
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        if !ok && format == "ustar" {
            // ustar cannot hold the 150-byte path component; GNU tar refuses, fine.
            continue;
        }
        assert!(ok, "{format}");
        let got = entries(&read_all(&std::fs::read(&out).unwrap(), 1000).unwrap());
        let files: Vec<_> = got.iter().filter(|(_, c)| c.is_some()).collect();
        assert_eq!(files.len(), 2, "{format}: {got:?}");
        let curr = format!("Default/IndexedDB/{}/CURRENT", "y".repeat(120));
        assert!(
            got.contains(&(curr, Some(b"MANIFEST-000001\n".to_vec()))),
            "{format}: {got:?}"
        );
        assert!(got.contains(&("Local State".into(), Some(b"{\"a\":1}".to_vec()))));
    }
}

#[test]
fn refuses_links_devices_and_unsafe_paths() {
    let with_type = |name: &str, typeflag: u8| {
        let mut h = ustar_block(name.as_bytes(), &[], typeflag, 0, 0o644, 1);
        // Recompute the checksum after changing nothing but keeping the helper's layout.
        h[156] = typeflag;
        let sum: u64 = h
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(*b)
                }
            })
            .sum();
        h[148..154].copy_from_slice(format!("{sum:06o}").as_bytes());
        let mut v = h.to_vec();
        v.extend_from_slice(&END_OF_ARCHIVE);
        v
    };
    for (t, kind) in [
        (b'1', "hard link"),
        (b'2', "symbolic link"),
        (b'3', "character device"),
        (b'4', "block device"),
        (b'6', "FIFO"),
    ] {
        match read_all(&with_type("x", t), 512) {
            Err(TarError::Unsupported { kind: k, .. }) => assert_eq!(k, kind),
            other => panic!("{kind}: {other:?}"),
        }
    }
    for bad in ["/etc/passwd", "../x", "a/../../x", "a/.."] {
        assert!(
            matches!(
                read_all(&with_type(bad, b'0'), 512),
                Err(TarError::UnsafePath { .. })
            ),
            "{bad:?}"
        );
    }
    // The writer refuses them too.
    assert!(header("../x", Kind::Dir, 0, 0).is_err());
    assert!(header("/x", Kind::File { size: 1 }, 0, 0).is_err());
    // A NUL can only come through a PAX path record.
    assert!(safe_path(b"a\0b").is_err());
    // "./a//b" is fine and normalised.
    assert_eq!(safe_path(b"./a//b/").unwrap(), "a/b");
    assert_eq!(safe_path(b"./").unwrap(), "");
}

#[test]
fn truncated_or_corrupt_streams_are_refused() {
    let bytes = archive(&[("a", Some(&[1u8; 1000])), ("b", Some(b"x"))]);
    // Cut anywhere before the end blocks: always refused.
    for cut in [0, 100, 512, 700, 1536, 2048, 2560] {
        assert!(
            matches!(read_all(&bytes[..cut], 97), Err(TarError::Truncated { .. })),
            "cut at {cut}"
        );
    }
    // A flipped byte in a header.
    let mut bad = bytes.clone();
    bad[3] ^= 0x20;
    assert!(matches!(
        read_all(&bad, 512),
        Err(TarError::Checksum { index: 0 })
    ));
    // Not a tar at all.
    assert!(read_all(&[b'{'; 1024], 512).is_err());
    // An oversized PAX header.
    let mut pax = ustar_block(b"pax", &[], b'x', MAX_META_BYTES + 1, 0o644, 1).to_vec();
    pax.extend_from_slice(&END_OF_ARCHIVE);
    assert!(matches!(
        read_all(&pax, 512),
        Err(TarError::BadExtension { .. })
    ));
}
