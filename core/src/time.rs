//! Instants for key expiry. The core never reads a clock: adapters pass
//! the current time in as a [`UnixTime`], so expiry is tested with any
//! time a test likes.

use std::fmt;

use toml_datetime::{Datetime, Offset};

/// Seconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(i64);

/// Why a value is not an instant the proxy can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimeProblem {
    /// Not an RFC 3339 date or date-time.
    Syntax,
    /// A date-time without `Z` or a `±hh:mm` offset: which zone is meant?
    NoOffset,
    /// A time of day without a date.
    NoDate,
}

impl fmt::Display for TimeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Syntax => {
                "is not an RFC 3339 date (2027-01-31) or date-time (2027-01-31T18:00:00Z)"
            }
            Self::NoOffset => {
                "has a time but no UTC offset; add Z or ±hh:mm (2027-01-31T18:00:00Z)"
            }
            Self::NoDate => "is a time of day without a date",
        })
    }
}

impl UnixTime {
    /// The instant `secs` seconds after the Unix epoch.
    pub const fn from_secs(secs: i64) -> Self {
        Self(secs)
    }

    /// The instant `millis` milliseconds after the epoch (JavaScript's
    /// `Date.now()`), rounded down to the second.
    pub fn from_millis(millis: f64) -> Self {
        Self((millis / 1000.0).floor() as i64)
    }

    /// Seconds since the epoch.
    pub const fn secs(self) -> i64 {
        self.0
    }

    /// Reads an RFC 3339 date (`2027-01-31`, meaning its first second,
    /// UTC) or date-time with an offset (`2027-01-31T18:00:00+01:00`).
    pub(crate) fn parse(text: &str) -> Result<Self, TimeProblem> {
        let datetime: Datetime = text.trim().parse().map_err(|_| TimeProblem::Syntax)?;
        Self::from_datetime(&datetime)
    }

    /// The instant a TOML date or offset date-time stands for. A bare date
    /// is its first second in UTC: a key that `expires = 2027-01-31` no
    /// longer works on that day.
    pub(crate) fn from_datetime(datetime: &Datetime) -> Result<Self, TimeProblem> {
        let date = datetime.date.ok_or(TimeProblem::NoDate)?;
        let days = days_from_civil(
            i64::from(date.year),
            i64::from(date.month),
            i64::from(date.day),
        );
        let Some(time) = datetime.time else {
            return Ok(Self(days * 86_400));
        };
        let offset_minutes = match datetime.offset {
            None => return Err(TimeProblem::NoOffset),
            Some(Offset::Z) => 0,
            Some(Offset::Custom { minutes }) => i64::from(minutes),
        };
        let seconds = i64::from(time.hour) * 3600
            + i64::from(time.minute) * 60
            + i64::from(time.second.unwrap_or(0));
        Ok(Self(days * 86_400 + seconds - offset_minutes * 60))
    }
}

impl fmt::Display for UnixTime {
    /// RFC 3339 in UTC, to the second: `2027-01-31T00:00:00Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0.div_euclid(86_400);
        let secs = self.0.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
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
    fn dates_and_date_times() {
        assert_eq!(UnixTime::parse("1970-01-01"), Ok(UnixTime(0)));
        assert_eq!(UnixTime::parse("2027-01-31"), Ok(UnixTime(1_801_353_600)));
        assert_eq!(
            UnixTime::parse("2027-01-31T01:00:00+01:00"),
            UnixTime::parse("2027-01-31T00:00:00Z")
        );
        assert_eq!(
            UnixTime::parse("2000-02-29T12:34:56Z").map(|t| t.to_string()),
            Ok("2000-02-29T12:34:56Z".to_owned())
        );
        assert_eq!(
            UnixTime::parse("2027-01-31T18:00:00"),
            Err(TimeProblem::NoOffset)
        );
        assert_eq!(UnixTime::parse("18:00:00"), Err(TimeProblem::NoDate));
        for bad in ["", "tomorrow", "2027-13-01", "2027-02-30", "31/01/2027"] {
            assert_eq!(UnixTime::parse(bad), Err(TimeProblem::Syntax), "{bad}");
        }
    }

    #[test]
    fn civil_round_trips() {
        for days in [-800_000, -1, 0, 1, 59, 60, 365, 11_016, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(UnixTime(-1).to_string(), "1969-12-31T23:59:59Z");
    }
}
