//! Makes a VM's console line safe to put on the shared terminal: every
//! terminal control a guest could use to move the cursor, erase or overwrite
//! what others printed, retitle the window or switch character sets is shown
//! as visible text instead of being sent.
//!
//! - C0 controls (U+0000..U+001F) other than TAB, and DEL, in caret notation:
//!   `^[` for ESC, `^H` for backspace, `^M` for a carriage return, `^?` for DEL.
//! - C1 controls (U+0080..U+009F, UTF-8 encoded) as `\u{9b}`.
//! - Bytes that are not valid UTF-8 (among them the raw 8-bit C1 bytes
//!   0x80..0x9F, which some terminals obey) as `\x9b`.
//!
//! Everything else, TAB and all other printable Unicode, passes unchanged.
//! Pure and generic over [`core::fmt::Write`], so it is tested on the host and
//! works with any console driver.

use core::fmt::{self, Write};

/// Whether `c` is sent as is.
fn plain(c: char) -> bool {
    c == '\t' || !(c.is_ascii_control() || ('\u{80}'..='\u{9f}').contains(&c))
}

/// How one control character is shown.
fn write_control(out: &mut impl Write, c: char) -> fmt::Result {
    let v = u32::from(c);
    match v {
        // Caret notation: ^@ .. ^_ for 0x00..0x1f, ^? for DEL (0x7f ^ 0x40).
        0x00..=0x1f | 0x7f => {
            out.write_char('^')?;
            out.write_char(char::from((v as u8) ^ 0x40))
        }
        _ => write!(out, "\\u{{{v:x}}}"),
    }
}

/// Writes `text` with every control shown escaped (see the module docs).
pub fn write_escaped(out: &mut impl Write, text: &[u8]) -> fmt::Result {
    for chunk in text.utf8_chunks() {
        let s = chunk.valid();
        let mut start = 0;
        for (i, c) in s.char_indices() {
            if plain(c) {
                continue;
            }
            out.write_str(s.get(start..i).unwrap_or(""))?;
            write_control(out, c)?;
            start = i + c.len_utf8();
        }
        out.write_str(s.get(start..).unwrap_or(""))?;
        for b in chunk.invalid() {
            write!(out, "\\x{b:02x}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(b: &[u8]) -> String {
        let mut s = String::new();
        write_escaped(&mut s, b).unwrap();
        s
    }

    /// What a shown line may contain: no control but TAB.
    fn safe(s: &str) -> bool {
        s.chars().all(plain)
    }

    #[test]
    fn every_single_byte() {
        for b in 0..=255u8 {
            let want = match b {
                b'\t' => "\t".to_string(),
                0x00..=0x1f => format!("^{}", char::from(b + 0x40)),
                0x7f => "^?".to_string(),
                0x20..=0x7e => char::from(b).to_string(),
                _ => format!("\\x{b:02x}"),
            };
            assert_eq!(esc(&[b]), want, "byte {b:#04x}");
        }
    }

    #[test]
    fn every_byte_pair_comes_out_safe() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let s = esc(&[a, b]);
                assert!(safe(&s), "{a:#04x} {b:#04x} -> {s:?}");
            }
        }
    }

    #[test]
    fn every_code_point() {
        for c in (0..=0x10ffffu32).filter_map(char::from_u32) {
            let mut buf = [0; 4];
            let s = esc(c.encode_utf8(&mut buf).as_bytes());
            let v = u32::from(c);
            if c == '\t' || (0x20..0x7f).contains(&v) || v >= 0xa0 {
                assert_eq!(s, c.to_string(), "U+{v:04X}");
            } else if (0x80..0xa0).contains(&v) {
                assert_eq!(s, format!("\\u{{{v:x}}}"));
            } else {
                assert!(s.starts_with('^') && s.len() == 2, "U+{v:04X} -> {s}");
            }
        }
    }

    #[test]
    fn forged_lines_stay_visible() {
        assert_eq!(
            esc(b"junk\r[bystander] hello: tick 1"),
            "junk^M[bystander] hello: tick 1"
        );
        assert_eq!(
            esc(b"\x1b[2K\x1b[1A\x08\x08[ 1.0] VM bystander stopped"),
            "^[[2K^[[1A^H^H[ 1.0] VM bystander stopped"
        );
        assert_eq!(esc(b"\x1b]0;title\x07"), "^[]0;title^G");
        assert_eq!(esc("\u{9b}2K".as_bytes()), "\\u{9b}2K");
        assert_eq!(esc(b"\x9b2K"), "\\x9b2K");
    }

    #[test]
    fn text_and_tabs_pass_unchanged() {
        let t = "naïve\tcafé ✓ 日本 🦀 plain ascii ~!@#";
        assert_eq!(esc(t.as_bytes()), t);
        assert_eq!(esc(b""), "");
    }
}
