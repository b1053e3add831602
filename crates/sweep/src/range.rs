//! Axis values as users write them on the command line.
//!
//! A list is comma-separated items, each one of:
//! - `N`: one value;
//! - `A..B`: powers of two times `A`, doubling from `A` up to `B` (`64..16384` = 64, 128, ...,
//!   16384; `B` is included only when it is reached);
//! - `A..B:+S`: an arithmetic range with step `S` (`1..9:+4` = 1, 5, 9);
//! - `A..B:*K`: a geometric range with factor `K` (`1..1000:*10` = 1, 10, 100, 1000);
//! - `...`: continue the progression of the two items before it up to the item after it, by the
//!   ratio of those two items when it is a whole number above 1 and the doubling continues exactly,
//!   else by their difference (`1,2,4,...,1024` doubles; `8,16,...,64` doubles; `10,20,...,50` adds
//!   10). The item after `...` must be hit exactly.
//!
//! Values must be at least 1, at most the axis maximum, and strictly increasing. Lengths are
//! computed before anything is allocated, so `1..1000000000000:+1` is an error, not an
//! out-of-memory.

use crate::error::SweepError;

/// The most values one axis may hold.
pub const MAX_AXIS_VALUES: u64 = 1 << 24;

fn err(flag: &'static str, reason: impl Into<String>) -> SweepError {
    SweepError::Range {
        flag,
        reason: reason.into(),
    }
}

fn number(flag: &'static str, text: &str, max: u64) -> Result<u64, SweepError> {
    let t = text.trim();
    let value: u64 = t
        .replace('_', "")
        .parse()
        .map_err(|_| err(flag, format!("`{t}` is not a whole number")))?;
    if value == 0 || value > max {
        return Err(err(flag, format!("{value} is out of range (1 to {max})")));
    }
    Ok(value)
}

/// An arithmetic (`Add`) or geometric (`Mul`) progression from `start` to at most `end`.
#[derive(Clone, Copy)]
enum Step {
    Add(u64),
    Mul(u64),
}

fn progression_len(start: u64, end: u64, step: Step) -> u64 {
    match step {
        Step::Add(s) => (end - start) / s + 1,
        Step::Mul(k) => {
            let mut n = 1;
            let mut v = start;
            while let Some(next) = v.checked_mul(k).filter(|&x| x <= end) {
                v = next;
                n += 1;
            }
            n
        }
    }
}

fn push_progression(out: &mut Vec<u64>, start: u64, end: u64, step: Step) {
    let mut v = start;
    loop {
        out.push(v);
        let next = match step {
            Step::Add(s) => v.checked_add(s),
            Step::Mul(k) => v.checked_mul(k),
        };
        match next {
            Some(n) if n <= end => v = n,
            _ => break,
        }
    }
}

enum Item {
    Value(u64),
    Range { start: u64, end: u64, step: Step },
    Ellipsis,
}

fn parse_item(flag: &'static str, item: &str, max: u64) -> Result<Item, SweepError> {
    let item = item.trim();
    if item == "..." {
        return Ok(Item::Ellipsis);
    }
    let Some((start, rest)) = item.split_once("..") else {
        return Ok(Item::Value(number(flag, item, max)?));
    };
    let (end, step) = match rest.split_once(':') {
        None => (rest, Step::Mul(2)),
        Some((end, step)) => {
            let step = step.trim();
            let parsed = if let Some(s) = step.strip_prefix('+') {
                Step::Add(number(flag, s, u64::MAX)?)
            } else if let Some(k) = step.strip_prefix('*') {
                let k = number(flag, k, u64::MAX)?;
                if k < 2 {
                    return Err(err(
                        flag,
                        format!("`{item}`: the factor must be at least 2"),
                    ));
                }
                Step::Mul(k)
            } else {
                return Err(err(
                    flag,
                    format!("`{item}`: the step must be `+S` (add) or `*K` (multiply)"),
                ));
            };
            (end, parsed)
        }
    };
    let (start, end) = (number(flag, start, max)?, number(flag, end, max)?);
    if start > end {
        return Err(err(flag, format!("range `{item}` is reversed")));
    }
    Ok(Item::Range { start, end, step })
}

/// Parse one axis (`--ranks 1,2,4,...,1024`, `--widths 64..16384`). `max` bounds each value.
pub fn parse_values(flag: &'static str, text: &str, max: u64) -> Result<Vec<u64>, SweepError> {
    if text.trim().is_empty() {
        return Err(err(flag, "the list is empty"));
    }
    let items = text
        .split(',')
        .map(|i| parse_item(flag, i, max))
        .collect::<Result<Vec<_>, _>>()?;
    // Count first: nothing is allocated for a list that is too long.
    let mut total: u64 = 0;
    let mut plan: Vec<(u64, u64, Step)> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let (start, end, step) = match *item {
            Item::Value(v) => (v, v, Step::Add(1)),
            Item::Range { start, end, step } => (start, end, step),
            Item::Ellipsis => {
                let pair = match i.checked_sub(2) {
                    Some(j) => (&items[j], &items[j + 1]),
                    None => (&Item::Ellipsis, &Item::Ellipsis),
                };
                let (a, b) = match pair {
                    (Item::Value(a), Item::Value(b)) => (*a, *b),
                    _ => {
                        return Err(err(
                            flag,
                            "`...` needs two single values before it (e.g. 1,2,...,64)",
                        ));
                    }
                };
                let Some(Item::Value(target)) = items.get(i + 1) else {
                    return Err(err(
                        flag,
                        "`...` needs a single value after it (e.g. 1,2,...,64)",
                    ));
                };
                if b <= a || *target <= b {
                    return Err(err(
                        flag,
                        format!("`{a},{b},...,{target}` does not increase"),
                    ));
                }
                let step = if b % a == 0 && b / a >= 2 {
                    Step::Mul(b / a)
                } else {
                    Step::Add(b - a)
                };
                let step = match step {
                    Step::Mul(k) if !reaches(b, *target, Step::Mul(k)) => Step::Add(b - a),
                    s => s,
                };
                if !reaches(b, *target, step) {
                    return Err(err(
                        flag,
                        format!("`{a},{b},...,{target}`: the progression never hits {target}"),
                    ));
                }
                // The values strictly between b and target.
                match step {
                    Step::Add(s) => {
                        let n = (target - b) / s - 1;
                        if n > 0 {
                            plan.push((b + s, target - s, step));
                            total += n;
                        }
                    }
                    Step::Mul(k) => {
                        if b * k < *target {
                            plan.push((b * k, target / k, step));
                            total += progression_len(b * k, target / k, step);
                        }
                    }
                }
                if total > MAX_AXIS_VALUES {
                    return Err(err(
                        flag,
                        format!("more than {MAX_AXIS_VALUES} values; narrow the range"),
                    ));
                }
                continue;
            }
        };
        total = total.saturating_add(progression_len(start, end, step));
        if total > MAX_AXIS_VALUES {
            return Err(err(
                flag,
                format!("more than {MAX_AXIS_VALUES} values; narrow the range"),
            ));
        }
        plan.push((start, end, step));
    }
    let mut values = Vec::with_capacity(total as usize);
    for (start, end, step) in plan {
        push_progression(&mut values, start, end, step);
    }
    for pair in values.windows(2) {
        if pair[1] <= pair[0] {
            return Err(err(
                flag,
                format!(
                    "values must increase ({} comes after {}); ranges are written low..high",
                    pair[1], pair[0]
                ),
            ));
        }
    }
    Ok(values)
}

fn reaches(from: u64, target: u64, step: Step) -> bool {
    match step {
        Step::Add(s) => (target - from).is_multiple_of(s),
        Step::Mul(k) => {
            let mut v = from;
            while v < target {
                match v.checked_mul(k) {
                    Some(n) => v = n,
                    None => return false,
                }
            }
            v == target
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Vec<u64>, String> {
        parse_values("--ranks", text, 1 << 20).map_err(|e| e.to_string())
    }

    #[test]
    fn lists_ranges_and_ellipses() {
        assert_eq!(p("8").unwrap(), [8]);
        assert_eq!(p("1,2,4").unwrap(), [1, 2, 4]);
        assert_eq!(
            p("1,2,4,...,1024").unwrap(),
            [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
        );
        assert_eq!(p("10,20,...,50").unwrap(), [10, 20, 30, 40, 50]);
        // 3, 6 would double to 12, 24: 15 is not hit that way, so the step is +3.
        assert_eq!(p("3,6,...,15").unwrap(), [3, 6, 9, 12, 15]);
        assert_eq!(p("1,2,...,4").unwrap(), [1, 2, 4]);
        assert_eq!(p("1,2,...,3").unwrap(), [1, 2, 3]);
        assert_eq!(
            p("64..16384").unwrap(),
            [64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
        );
        assert_eq!(p("64..200").unwrap(), [64, 128]);
        assert_eq!(p("1..9:+4").unwrap(), [1, 5, 9]);
        assert_eq!(p("1..1000:*10").unwrap(), [1, 10, 100, 1000]);
        assert_eq!(p("1..4:+1,8,16..32").unwrap(), [1, 2, 3, 4, 8, 16, 32]);
        assert_eq!(p(" 1_024 ").unwrap(), [1024]);
    }

    #[test]
    fn bad_lists_are_named_errors() {
        assert_eq!(p("").unwrap_err(), "--ranks: the list is empty");
        assert_eq!(
            p("0").unwrap_err(),
            "--ranks: 0 is out of range (1 to 1048576)"
        );
        assert_eq!(
            p("0..8").unwrap_err(),
            "--ranks: 0 is out of range (1 to 1048576)"
        );
        assert_eq!(
            p("16..8").unwrap_err(),
            "--ranks: range `16..8` is reversed"
        );
        assert_eq!(
            p("8,4").unwrap_err(),
            "--ranks: values must increase (4 comes after 8); ranges are written low..high"
        );
        assert_eq!(p("x").unwrap_err(), "--ranks: `x` is not a whole number");
        assert_eq!(p("1,,2").unwrap_err(), "--ranks: `` is not a whole number");
        assert!(p("...,4").unwrap_err().contains("two single values before"));
        assert!(p("1,2,...").unwrap_err().contains("a single value after"));
        assert_eq!(
            p("2,4,...,7").unwrap_err(),
            "--ranks: `2,4,...,7`: the progression never hits 7"
        );
        assert!(p("1..9:4").unwrap_err().contains("`+S` (add) or `*K`"));
        assert!(
            p("1..9:*1")
                .unwrap_err()
                .contains("factor must be at least 2")
        );
        let huge = parse_values("--widths", "1..1000000000000:+1", u64::MAX).unwrap_err();
        assert_eq!(
            huge.to_string(),
            "--widths: more than 16777216 values; narrow the range"
        );
    }
}
