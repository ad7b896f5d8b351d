//! Reading a shard from someone else: the strict parse of seedpool's tar layout.
//!
//! A seedpool shard has exactly one valid form for its members (see the module doc of
//! `shard` and docs/format.md): every header is the one [`header`] writes for its name
//! and size, data is padded with zeros, and two zero blocks end the file. So the parse
//! rebuilds each header from the name and size it reads and compares all 512 bytes;
//! anything else (links, devices, extended headers, modes, owners, a NUL inside a name,
//! bytes hidden in padding or after the end) is refused, with the field named.

use crate::name::{split_member_name, NameError};

use super::{header, padded, BLOCK};

/// A member found by reading a shard's headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarMember {
    /// `<key>.<ext>`, checked.
    pub name: String,
    /// Bytes of the key at the start of `name`.
    pub key_len: usize,
    /// Offset of the member's data (after its header).
    pub offset: u64,
    pub length: u64,
}

impl TarMember {
    pub fn key(&self) -> &str {
        &self.name[..self.key_len]
    }

    pub fn ext(&self) -> &str {
        &self.name[self.key_len + 1..]
    }
}

/// Why bytes are not a seedpool shard, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TarProblem {
    Malformed { offset: u64, problem: String },
    BadName { offset: u64, source: NameError },
}

/// The fields of a ustar header, for saying which one is wrong (the checksum, checked
/// first, follows from the others).
const FIELDS: &[(usize, usize, &str)] = &[
    (0, 100, "name"),
    (100, 108, "mode"),
    (108, 116, "uid"),
    (116, 124, "gid"),
    (124, 136, "size"),
    (136, 148, "mtime"),
    (156, 157, "typeflag"),
    (157, 257, "linkname"),
    (257, 263, "magic"),
    (263, 265, "version"),
    (265, 297, "uname"),
    (297, 329, "gname"),
    (329, 337, "devmajor"),
    (337, 345, "devminor"),
    (345, 500, "prefix"),
    (500, 512, "padding"),
];

fn member_type(flag: u8) -> &'static str {
    match flag {
        0 => "an old-style regular file",
        b'1' => "a hard link",
        b'2' => "a symbolic link",
        b'3' => "a character device",
        b'4' => "a block device",
        b'5' => "a directory",
        b'6' => "a FIFO",
        b'7' => "a contiguous file",
        b'x' | b'g' => "a pax extended header",
        b'L' | b'K' => "a GNU long name",
        _ => "an unknown type",
    }
}

/// A field's bytes as text for a message: NULs at the end dropped, the rest escaped.
fn field_text(bytes: &[u8]) -> String {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    bytes[..end].escape_ascii().to_string()
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c| c == '\0' || c == ' ');
    if text.is_empty() || !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u64::from_str_radix(text, 8).ok()
}

/// Reads one header at `offset`: the member's name (checked), key length and size.
fn read_header(h: &[u8], offset: u64) -> Result<(String, usize, u64), TarProblem> {
    let malformed = |problem: String| TarProblem::Malformed { offset, problem };
    let stored =
        parse_octal(&h[148..156]).ok_or_else(|| malformed("unreadable header checksum".into()))?;
    let sum: u64 = h[..148]
        .iter()
        .chain(&[b' '; 8])
        .chain(&h[156..])
        .map(|&b| u64::from(b))
        .sum();
    if sum != stored {
        return Err(malformed(format!(
            "header checksum {stored} does not match {sum}"
        )));
    }
    let flag = h[156];
    if flag != b'0' {
        return Err(malformed(format!(
            "member type `{}` ({}) is not a regular file",
            [flag].escape_ascii(),
            member_type(flag)
        )));
    }
    if &h[257..263] != b"ustar\0" || &h[263..265] != b"00" {
        return Err(malformed("not a POSIX ustar header".into()));
    }
    if h[345..500].iter().any(|&b| b != 0) {
        return Err(malformed("member name uses the ustar prefix field".into()));
    }
    let name_end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
    if h[name_end..100].iter().any(|&b| b != 0) {
        return Err(malformed(format!(
            "member name `{}` holds a NUL byte inside it",
            h[..100].escape_ascii()
        )));
    }
    let name = std::str::from_utf8(&h[..name_end]).map_err(|_| {
        malformed(format!(
            "member name `{}` is not UTF-8",
            h[..name_end].escape_ascii()
        ))
    })?;
    let (key, _) =
        split_member_name(name).map_err(|source| TarProblem::BadName { offset, source })?;
    let size = parse_octal(&h[124..136]).ok_or_else(|| {
        malformed(format!(
            "unreadable size `{}` of member `{name}`",
            field_text(&h[124..136])
        ))
    })?;
    if size > super::MAX_MEMBER_SIZE {
        return Err(malformed(format!(
            "member `{name}` claims {size} bytes, more than a ustar size field holds"
        )));
    }
    let expected = header(name, size);
    if let Some((start, end, field)) = FIELDS
        .iter()
        .find(|(s, e, _)| h[*s..*e] != expected[*s..*e])
    {
        return Err(malformed(format!(
            "header field `{field}` of member `{name}` is `{}`, seedpool writes `{}`",
            field_text(&h[*start..*end]),
            field_text(&expected[*start..*end])
        )));
    }
    Ok((name.to_string(), key.as_str().len(), size))
}

/// Parses a whole shard held in memory (a map of the file). Members come back in the
/// order they lie, which is (key, extension) order, strictly increasing.
pub fn parse(data: &[u8]) -> Result<Vec<TarMember>, TarProblem> {
    let mut reader = Reader::new(data);
    let mut members = Vec::new();
    while let Some(m) = reader.next_member()? {
        members.push(m);
    }
    Ok(members)
}

/// Reads a shard's members one at a time, front to back, so a caller can check them
/// while it reads the rest of the file (`check` hashes as it goes).
pub struct Reader<'d> {
    data: &'d [u8],
    /// Where the next header is.
    at: u64,
    /// The member before, for the order check.
    prev: Option<(String, usize)>,
    done: bool,
}

impl<'d> Reader<'d> {
    pub fn new(data: &'d [u8]) -> Self {
        Self {
            data,
            at: 0,
            prev: None,
            done: false,
        }
    }

    /// Where the next header (or the end-of-archive blocks) lies.
    pub fn position(&self) -> u64 {
        self.at
    }

    /// The next member; `None` after the end-of-archive blocks, checked.
    pub fn next_member(&mut self) -> Result<Option<TarMember>, TarProblem> {
        if self.done {
            return Ok(None);
        }
        let (data, at) = (self.data, self.at);
        let len = data.len() as u64;
        let malformed = |offset: u64, problem: String| TarProblem::Malformed { offset, problem };
        if at + BLOCK > len {
            return Err(malformed(
                at,
                "truncated before the end-of-archive blocks".into(),
            ));
        }
        let h = &data[at as usize..(at + BLOCK) as usize];
        if h.iter().all(|&b| b == 0) {
            if at + 2 * BLOCK > len {
                return Err(malformed(
                    at,
                    "truncated after the first end-of-archive block".into(),
                ));
            }
            let second = &data[(at + BLOCK) as usize..(at + 2 * BLOCK) as usize];
            if second.iter().any(|&b| b != 0) {
                return Err(malformed(
                    at + BLOCK,
                    "second end-of-archive block is not zero".into(),
                ));
            }
            if at + 2 * BLOCK != len {
                return Err(malformed(
                    at + 2 * BLOCK,
                    format!(
                        "{} bytes follow the end-of-archive blocks",
                        len - at - 2 * BLOCK
                    ),
                ));
            }
            self.done = true;
            return Ok(None);
        }
        let (name, key_len, size) = read_header(h, at)?;
        let data_at = at + BLOCK;
        // Room for the data, its padding and the two end blocks.
        let data_end = data_at.checked_add(padded(size)).filter(|&end| end <= len);
        let Some(data_end) = data_end else {
            return Err(malformed(
                at,
                format!("member `{name}` of {size} bytes runs past the end of the file"),
            ));
        };
        if data_end + 2 * BLOCK > len {
            return Err(malformed(
                data_end,
                "truncated: the end-of-archive blocks are missing".into(),
            ));
        }
        let pad = &data[(data_at + size) as usize..data_end as usize];
        if pad.iter().any(|&b| b != 0) {
            return Err(malformed(
                data_at + size,
                format!("the padding after member `{name}` is not zero"),
            ));
        }
        let member = TarMember {
            name,
            key_len,
            offset: data_at,
            length: size,
        };
        if let Some((prev, prev_key)) = &self.prev {
            let prev_pair = (&prev[..*prev_key], &prev[*prev_key + 1..]);
            if prev_pair >= (member.key(), member.ext()) {
                return Err(malformed(
                    at,
                    format!(
                        "member `{}` is out of order or repeated (after `{prev}`; members are sorted by key, then extension)",
                        member.name
                    ),
                ));
            }
        }
        self.prev = Some((member.name.clone(), member.key_len));
        self.at = data_end;
        Ok(Some(member))
    }
}

/// A shard image of `members` (name, data), made with seedpool's own headers.
#[cfg(test)]
pub(crate) fn image(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in members {
        out.extend_from_slice(&header(name, data.len() as u64));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(mut bytes: Vec<u8>, at: usize, edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
        let h = &mut bytes[at..at + 512];
        edit(h);
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        bytes
    }

    fn problem(bytes: &[u8]) -> String {
        match parse(bytes).unwrap_err() {
            TarProblem::Malformed { offset, problem } => format!("{offset}: {problem}"),
            TarProblem::BadName { offset, source } => format!("{offset}: name: {source}"),
        }
    }

    #[test]
    fn seedpool_shards_parse_with_offsets_and_keys() {
        let bytes = image(&[("a.jpg", b"12345"), ("a.json", b"{}"), ("b.txt", b"")]);
        let m = parse(&bytes).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(
            (m[0].key(), m[0].ext(), m[0].offset, m[0].length),
            ("a", "jpg", 512, 5)
        );
        assert_eq!((m[1].offset, m[2].offset), (1536, 2560));
        assert_eq!(m[2].ext(), "txt");
    }

    #[test]
    fn keys_that_prefix_others_sort_by_key_not_by_name() {
        // (key, ext) order puts `a.json` before `a-b.jpg`, byte order of names would not.
        let bytes = image(&[("a.json", b"{}"), ("a-b.jpg", b"x")]);
        assert_eq!(parse(&bytes).unwrap().len(), 2);
        let bytes = image(&[("a-b.jpg", b"x"), ("a.json", b"{}")]);
        assert!(
            problem(&bytes).contains("out of order"),
            "{}",
            problem(&bytes)
        );
    }

    #[test]
    fn every_deviation_from_seedpool_headers_is_named() {
        let good = image(&[("k.txt", b"abc")]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                with_header(good.clone(), 0, |h| h[156] = b'2'),
                "(a symbolic link) is not a regular file",
            ),
            (
                with_header(good.clone(), 0, |h| h[156] = b'1'),
                "(a hard link)",
            ),
            (
                with_header(good.clone(), 0, |h| h[156] = b'3'),
                "(a character device)",
            ),
            (
                with_header(good.clone(), 0, |h| h[156] = b'x'),
                "(a pax extended header)",
            ),
            (
                with_header(good.clone(), 0, |h| {
                    h[100..108].copy_from_slice(b"0004755\0")
                }),
                "header field `mode` of member `k.txt` is `0004755`, seedpool writes `0000644`",
            ),
            (
                with_header(good.clone(), 0, |h| {
                    h[108..116].copy_from_slice(b"0001750\0")
                }),
                "header field `uid`",
            ),
            (
                with_header(good.clone(), 0, |h| h[265..269].copy_from_slice(b"root")),
                "header field `uname`",
            ),
            (
                with_header(good.clone(), 0, |h| h[157..160].copy_from_slice(b"etc")),
                "header field `linkname`",
            ),
            (
                with_header(good.clone(), 0, |h| h[345] = b'x'),
                "prefix field",
            ),
            (
                with_header(good.clone(), 0, |h| h[1] = 0),
                "holds a NUL byte inside it",
            ),
            (
                with_header(good.clone(), 0, |h| {
                    h[..6].copy_from_slice(b"../x.t");
                }),
                "name: ",
            ),
            (
                with_header(good.clone(), 0, |h| {
                    h[..100].fill(0);
                    h[..9].copy_from_slice(b"/etc.conf");
                }),
                "name: ",
            ),
            (
                with_header(good.clone(), 0, |h| h[257..263].copy_from_slice(b"ustar ")),
                "not a POSIX ustar header",
            ),
            (
                with_header(good.clone(), 0, |h| {
                    h[124..136].copy_from_slice(b"77777777777\0")
                }),
                "runs past the end of the file",
            ),
            (
                with_header(good.clone(), 0, |h| {
                    h[124..136].copy_from_slice(b"0000000000x\0")
                }),
                "unreadable size",
            ),
            (
                with_header(good.clone(), 0, |h| h[1] = 0xff),
                "is not UTF-8",
            ),
        ];
        for (bytes, expect) in cases {
            let p = problem(&bytes);
            assert!(p.contains(expect), "expected `{expect}` in `{p}`");
        }
        let mut bad_sum = good.clone();
        bad_sum[0] = b'j';
        assert!(problem(&bad_sum).contains("header checksum"));
    }

    #[test]
    fn ends_must_be_exact() {
        let good = image(&[("k.txt", b"abc")]);
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"garbage");
        assert_eq!(
            problem(&trailing),
            "2048: 7 bytes follow the end-of-archive blocks"
        );
        assert_eq!(
            problem(&good[..1536]),
            "1024: truncated: the end-of-archive blocks are missing"
        );
        assert!(problem(&good[..600]).contains("runs past the end of the file"));
        assert!(
            problem(&image(&[])[..512]).contains("truncated after the first end-of-archive block")
        );
        assert!(problem(&good[..300]).contains("truncated before the end-of-archive blocks"));
        let mut second = good.clone();
        second[2000] = 1;
        assert!(problem(&second).contains("second end-of-archive block is not zero"));
        let mut padding = good.clone();
        padding[512 + 10] = 7;
        assert_eq!(
            problem(&padding),
            "515: the padding after member `k.txt` is not zero"
        );
        assert!(problem(&[]).contains("truncated"));
        let random: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        assert!(
            problem(&random).contains("header checksum"),
            "{}",
            problem(&random)
        );
    }

    #[test]
    fn repeated_members_are_refused() {
        let bytes = image(&[("k.txt", b"a"), ("k.txt", b"b")]);
        assert!(problem(&bytes).contains("out of order or repeated"));
    }
}
