//! Server profiles and bandwidths, as the LinuxONE bare metal offering sets them: a profile
//! fixes how many HiperSockets interfaces a server has and the bandwidth they share.
use std::fmt;

use serde::{Serialize, Serializer};

/// A built-in profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Profile {
    pub name: &'static str,
    /// The most NICs an LPAR of this profile has (replaces `max_nics_per_lpar`).
    pub interfaces: usize,
    /// The bandwidth its NICs share, per direction, unless the LPAR sets its own.
    pub bandwidth: Bandwidth,
}

/// Every built-in profile, as the offering lists them.
pub const PROFILES: [Profile; 3] = [
    Profile {
        name: "mz2d-metal-2x64",
        interfaces: 1,
        bandwidth: Bandwidth::gbps(2),
    },
    Profile {
        name: "mz2d-metal-16x512",
        interfaces: 2,
        bandwidth: Bandwidth::gbps(10),
    },
    Profile {
        name: "mz2d-metal-32x1024",
        interfaces: 2,
        bandwidth: Bandwidth::gbps(10),
    },
];

impl Profile {
    /// The built-in profile of that name.
    pub fn find(name: &str) -> Option<Profile> {
        PROFILES.into_iter().find(|p| p.name == name)
    }
}

/// Bits per second an LPAR may send, and receive, over all its NICs together. Written
/// `2Gbps`, `500Mbps`, `2.5Gbps` in the fabric file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bandwidth(pub u64);

/// Least and greatest bandwidth the file may set.
pub const MIN_BANDWIDTH: Bandwidth = Bandwidth(1_000_000);
pub const MAX_BANDWIDTH: Bandwidth = Bandwidth(400_000_000_000);

impl Bandwidth {
    pub const fn gbps(g: u64) -> Self {
        Bandwidth(g * 1_000_000_000)
    }

    pub fn bits_per_second(self) -> u64 {
        self.0
    }

    /// Bytes per second, as the data plane meters.
    pub fn bytes_per_second(self) -> u64 {
        self.0 / 8
    }

    /// Parses `<number><unit>`: a decimal number (`2`, `2.5`) and `Kbps`, `Mbps` or `Gbps`.
    pub fn parse(s: &str) -> Result<Bandwidth, String> {
        let expected = "a number and a unit, as \"2Gbps\", \"500Mbps\" or \"2.5Gbps\"";
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let scale: u64 = match unit {
            "Kbps" => 1_000,
            "Mbps" => 1_000_000,
            "Gbps" => 1_000_000_000,
            _ => return Err(format!("invalid bandwidth {s:?}: must be {expected}")),
        };
        // Digits, at most one point, digits on both sides of it: no float parsing quirks.
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let digits = |d: &str| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit());
        if !digits(whole) || (number.contains('.') && !digits(fraction)) || fraction.len() > 9 {
            return Err(format!("invalid bandwidth {s:?}: must be {expected}"));
        }
        let parse = |d: &str| d.parse::<u64>().ok();
        let bits = parse(whole)
            .and_then(|w| w.checked_mul(scale))
            .and_then(|w| {
                let f = if fraction.is_empty() {
                    0
                } else {
                    parse(fraction)? * scale / 10u64.pow(fraction.len() as u32)
                };
                w.checked_add(f)
            })
            .map(Bandwidth);
        match bits {
            Some(b) if (MIN_BANDWIDTH..=MAX_BANDWIDTH).contains(&b) => Ok(b),
            _ => Err(format!(
                "bandwidth {s:?} is out of range: must be {MIN_BANDWIDTH} to {MAX_BANDWIDTH}"
            )),
        }
    }
}

impl fmt::Display for Bandwidth {
    /// The largest unit that writes it exactly (`2Gbps`, `2500Mbps`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (scale, unit) in [
            (1_000_000_000, "Gbps"),
            (1_000_000, "Mbps"),
            (1_000, "Kbps"),
        ] {
            if self.0.is_multiple_of(scale) {
                return write!(f, "{}{unit}", self.0 / scale);
            }
        }
        write!(f, "{}bps", self.0)
    }
}

impl Serialize for Bandwidth {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidths_parse_with_their_unit_and_print_back() {
        for (text, bits) in [
            ("2Gbps", 2_000_000_000),
            ("10Gbps", 10_000_000_000),
            ("4Gbps", 4_000_000_000),
            ("500Mbps", 500_000_000),
            ("2.5Gbps", 2_500_000_000),
            ("1000Kbps", 1_000_000),
        ] {
            let b = Bandwidth::parse(text).unwrap();
            assert_eq!(b.bits_per_second(), bits, "{text}");
        }
        assert_eq!(Bandwidth::parse("2.5Gbps").unwrap().to_string(), "2500Mbps");
        assert_eq!(Bandwidth::gbps(2).to_string(), "2Gbps");
        assert_eq!(Bandwidth::gbps(10).bytes_per_second(), 1_250_000_000);
    }

    #[test]
    fn malformed_bandwidths_are_refused_with_what_is_expected() {
        for text in [
            "",
            "4",
            "Gbps",
            "4 Gbps",
            "4GB",
            "4gbps",
            "4Gbit",
            "-4Gbps",
            "4.Gbps",
            ".5Gbps",
            "1.2.3Gbps",
            "4Gbps ",
        ] {
            let err = Bandwidth::parse(text).unwrap_err();
            assert!(err.contains("must be a number and a unit"), "{text}: {err}");
        }
        for text in ["0Gbps", "999Kbps", "401Gbps", "99999999999999999999Gbps"] {
            let err = Bandwidth::parse(text).unwrap_err();
            assert!(
                err.contains("out of range: must be 1Mbps to 400Gbps"),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn the_profiles_are_the_offerings() {
        let p = Profile::find("mz2d-metal-2x64").unwrap();
        assert_eq!((p.interfaces, p.bandwidth), (1, Bandwidth::gbps(2)));
        let p = Profile::find("mz2d-metal-16x512").unwrap();
        assert_eq!((p.interfaces, p.bandwidth), (2, Bandwidth::gbps(10)));
        let p = Profile::find("mz2d-metal-32x1024").unwrap();
        assert_eq!((p.interfaces, p.bandwidth), (2, Bandwidth::gbps(10)));
        assert_eq!(Profile::find("mz2d-metal-64x2048"), None);
    }
}
