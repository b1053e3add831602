//! Human units for byte counts: binary prefixes, labelled (KiB, MiB, GiB, TiB).

/// `2097152` -> `"2.00 MiB"`; below 1 KiB the exact count in B.
pub fn binary(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::binary;

    #[test]
    fn binary_units() {
        assert_eq!(binary(1023), "1023 B");
        assert_eq!(binary(2_097_152), "2.00 MiB");
        assert_eq!(binary(3 * 1024 * 1024 * 1024), "3.00 GiB");
    }
}
