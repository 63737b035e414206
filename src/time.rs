//! RFC 3339 timestamps with millisecond precision, the only form on the wire.
//!
//! A few lines of civil-date arithmetic (Howard Hinnant's `days_from_civil`)
//! instead of a date crate: the SDK only formats UTC instants, and every byte
//! counts in the browser bundle.

/// Formats Unix milliseconds as `2026-12-04T15:16:52.123Z`.
///
/// ```
/// assert_eq!(cuecast::time::format_millis(0), "1970-01-01T00:00:00.000Z");
/// ```
pub fn format_millis(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// A non-empty run of ASCII digits within `i64` ([`crate::json::digits`]).
pub(crate) fn digits(s: &str) -> Option<i64> {
    i64::try_from(crate::json::digits(s)?).ok()
}

/// Parses an RFC 3339 timestamp (`Z` or `±hh:mm` offset, optional fraction)
/// into Unix milliseconds. Returns `None` for anything else.
pub fn parse_millis(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| digits(s.get(r)?);
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..3 {
            millis *= 10;
        }
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 60 + om;
            if *sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some((((days * 24 + hour) * 60 + min - offset_min) * 60 + sec.min(59)) * 1000 + millis)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_millis(1_796_397_412_123), "2026-12-04T15:16:52.123Z");
        assert_eq!(format_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn parse_inverts_format_across_centuries() {
        let mut ms = -2_208_988_800_000; // 1900-01-01
        while ms < 4_102_444_800_000 {
            assert_eq!(parse_millis(&format_millis(ms)), Some(ms), "{}", format_millis(ms));
            ms += 86_399_999 * 13 + 7;
        }
    }

    #[test]
    fn parses_offsets_and_fractions() {
        let z = parse_millis("2026-12-04T15:16:52.123Z").unwrap();
        assert_eq!(parse_millis("2026-12-04T16:16:52.123+01:00"), Some(z));
        assert_eq!(parse_millis("2026-12-04T15:16:52.1234567Z"), Some(z));
        assert_eq!(parse_millis("2026-12-04T15:16:52Z"), Some(z - 123));
        assert_eq!(parse_millis("2026-12-04T15:16:52.1Z"), Some(z - 23));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "2026-12-04",
            "2026-13-04T15:16:52Z",
            "2026-02-30T15:16:52Z",
            "2026-12-04T25:16:52Z",
            "2026-12-04T15:16:52",
            "2026-12-04T15:16:52.Z",
            "2026-12-04T15:16:52Zjunk",
            "2026-12-04T15:16:52+0100",
            "+026-12-04T15:16:52Z",
            "yesterday at noon, roughly",
        ] {
            assert_eq!(parse_millis(bad), None, "{bad}");
        }
    }
}
